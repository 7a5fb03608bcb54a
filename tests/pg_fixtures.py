"""PostgreSQL test databases: one template migrated per session, a copy of it per test.

Used when ``ORDERBUS_TEST_DATABASE=postgresql`` (see conftest.py). Every database
is dropped afterwards, with any connection a test left behind terminated first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from order_service.db import db, init_db
from order_service.migrations import migrate

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_numbers = itertools.count(1)


def server_url() -> str:
    return os.environ.get("ORDERBUS_TEST_POSTGRES_URL", DEFAULT_URL)


def database_url(name: str) -> str:
    parts = urlsplit(server_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin():
    conn = psycopg2.connect(server_url(), connect_timeout=5)
    conn.autocommit = True
    return conn


def _drop(conn, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _release_pool() -> None:
    """Close every pooled connection the proxy's database holds (so the database can be dropped)."""
    if db.obj is not None:
        if not db.is_closed():
            db.close()
        if hasattr(db.obj, "close_all"):
            db.obj.close_all()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    try:
        conn = _admin()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {server_url()} unreachable: {exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    name = f"orderbus_tmpl_{os.getpid()}"
    _drop(conn, name)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    migrate(init_db(database_url(name)), log=lambda _msg: None)
    _release_pool()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    yield name
    _release_pool()
    _drop(conn, name)
    conn.close()


@pytest.fixture
def postgres_database(postgres_template: str) -> Iterator[str]:
    name = f"orderbus_t{os.getpid()}_{next(_numbers)}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
        yield database_url(name)
        _release_pool()
        _drop(conn, name)
    finally:
        conn.close()
