"""PostgreSQL test databases: one template migrated per session, a copy of it per test.

Used when ``ORDERBUS_TEST_DATABASE=postgresql`` (see conftest.py). Every database
is dropped afterwards, with any connection a test left behind terminated first.
``CREATE DATABASE`` costs about a second (it WAL-logs the copy) and ``DROP`` half
of one, so the next test's database is created, and the last one dropped, in
background threads while a test runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from order_service.store.db import db, init_db
from order_service.store.migrations import migrate

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


class Databases:
    """Copies of the template, one ahead of the test that will use it."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.creator = ThreadPoolExecutor(1, thread_name_prefix="pg-create")
        self.dropper = ThreadPoolExecutor(1, thread_name_prefix="pg-drop")
        self.next: Future[str] = self.creator.submit(self._create)

    def _create(self) -> str:
        name = f"orderbus_t{os.getpid()}_{next(_numbers)}"
        conn = _admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            conn.close()
        return name

    def take(self) -> str:
        name = self.next.result()
        self.next = self.creator.submit(self._create)
        return name

    def drop(self, name: str) -> None:
        def run() -> None:
            conn = _admin()
            try:
                _drop(conn, name)
            finally:
                conn.close()

        self.dropper.submit(run)

    def close(self) -> None:
        try:
            self.drop(self.next.result())
        finally:
            self.creator.shutdown()
            self.dropper.shutdown(wait=True)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Databases]:
    try:
        conn = _admin()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {server_url()} unreachable: {exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    template = f"orderbus_tmpl_{os.getpid()}"
    _drop(conn, template)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{template}"')
    migrate(init_db(database_url(template)), log=lambda _msg: None)
    _release_pool()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    databases = Databases(template)
    yield databases
    _release_pool()
    databases.close()
    _drop(conn, template)
    conn.close()


@pytest.fixture
def postgres_database(postgres_databases: Databases) -> Iterator[str]:
    """A database of this test's own: a copy of the migrated template, dropped afterwards."""
    name = postgres_databases.take()
    yield database_url(name)
    _release_pool()
    postgres_databases.drop(name)


@contextlib.contextmanager
def empty_database(prefix: str) -> Iterator[str]:
    """A database with no tables at all, dropped afterwards (tests of migrate and of restores)."""
    conn = _admin()
    name = f"{prefix}_{os.getpid()}"
    _drop(conn, name)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        _release_pool()
        _drop(conn, name)
        conn.close()
