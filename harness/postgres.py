"""The PostgreSQL server the tests and the benchmarks create their databases on.

``ORDERBUS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
names it; databases are created and dropped through an autocommit connection to it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg2

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("ORDERBUS_TEST_POSTGRES_URL", DEFAULT_URL)


def database_url(name: str) -> str:
    """The URL of database ``name`` on that server."""
    parts = urlsplit(server_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connection():
    """An autocommit connection to the server (CREATE and DROP DATABASE cannot run in a transaction)."""
    conn = psycopg2.connect(server_url(), connect_timeout=5)
    conn.autocommit = True
    return conn


def drop_database(conn, name: str) -> None:
    """Drop database ``name`` if it exists, terminating any connection still open to it first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
