"""PostgreSQL test databases: one template migrated per session, a copy of it per test.

Used when ``ORDERBUS_TEST_DATABASE=postgresql`` (see conftest.py), on the server that
harness/postgres.py names. Every database is dropped afterwards, with any connection a
test left behind terminated first. ``CREATE DATABASE`` costs about a second (it
WAL-logs the copy) and ``DROP`` half of one, so the next test's database is created,
and the last one dropped, in background threads while a test runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg2
import pytest

from harness.postgres import admin_connection, database_url, drop_database, server_url
from order_service.store.db import db, init_db
from order_service.store.migrations import migrate

_numbers = itertools.count(1)


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
        conn = admin_connection()
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
            conn = admin_connection()
            try:
                drop_database(conn, name)
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
        conn = admin_connection()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {server_url()} unreachable: {exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    template = f"orderbus_tmpl_{os.getpid()}"
    drop_database(conn, template)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{template}"')
    migrate(init_db(database_url(template)), log=lambda _msg: None)
    _release_pool()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    databases = Databases(template)
    yield databases
    _release_pool()
    databases.close()
    drop_database(conn, template)
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
    conn = admin_connection()
    name = f"{prefix}_{os.getpid()}"
    drop_database(conn, name)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        _release_pool()
        drop_database(conn, name)
        conn.close()
