"""The database: connection and writer gate (``db``), tables (``models``), statements built
once (``inserts``), numbered migrations, backups.

May import: the shared modules (``config``, ``lifecycle``). Nothing above it.
"""
