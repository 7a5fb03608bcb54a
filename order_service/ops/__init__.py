"""The command line (``python -m order_service``: migrate, bootstrap, users, backups) and
the preflight checks ``make run`` runs first.

May import any room below ``api``; nothing imports it.
"""
