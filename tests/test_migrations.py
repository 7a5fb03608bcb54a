"""Numbered migrations: one command, idempotent, and readiness follows the schema."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from order_service.store.db import db, init_db
from order_service.store.migrations import MIGRATE_LOCK, discover, migrate
from tests.conftest import BACKEND
from tests.helpers import wait_until


@pytest.mark.sqlite_only
def test_migrate_twice_is_a_no_op(tmp_path):
    """A second run applies nothing and keeps the data."""
    path = tmp_path / "o.db"
    database = init_db(f"sqlite:///{path}")
    assert migrate(database, log=lambda _m: None) == [m.version for m in discover()]
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO users (id, username, password_hash, role, active, created_at)"
            " VALUES ('u1', 'kept', 'x', 'customer', 1, '2026-01-01 00:00:00')"
        )
    assert migrate(database, log=lambda _m: None) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT username FROM users").fetchall() == [("kept",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.sqlite_only
def test_pending_migration_takes_a_backup_first(tmp_path):
    """With a migration pending on an existing database, a copy of the file is taken first."""
    path = tmp_path / "o.db"
    database = init_db(f"sqlite:///{path}")
    migrate(database, log=lambda _m: None)
    with sqlite3.connect(path) as conn:  # pretend all are pending on a "version 0" database
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table not in ("sqlite_sequence", "schema_migrations"):
                conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM schema_migrations WHERE version > 1")
        conn.execute("UPDATE schema_migrations SET version = 0 WHERE version = 1")
    messages: list[str] = []
    assert migrate(database, log=messages.append) == [m.version for m in discover()]
    backups = list(tmp_path.glob("o.db.v0000.*.bak"))
    assert len(backups) == 1, messages
    assert any("backed up" in m for m in messages)


def test_readyz_is_503_while_the_schema_is_behind(client):
    """Readiness reports an unapplied migration and how to fix it."""
    assert client.get("/api/v1/readyz").status_code == 200
    with db.connection_context():
        db.execute_sql("DELETE FROM schema_migrations")
    response = client.get("/api/v1/readyz")
    assert response.status_code == 503
    assert "migrate" in response.json["detail"]


@pytest.fixture
def empty_database_url(tmp_path, database_url: str) -> Iterator[str]:
    """A database with no tables at all, on this run's backend (beside the test's usual one,
    which also makes the test run on PostgreSQL; see conftest.py)."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    from tests import pg_fixtures

    with pg_fixtures.empty_database("orderbus_empty") as url:
        yield url


@contextlib.contextmanager
def _holding_the_migrate_lock(url: str) -> Iterator[Callable[[], int]]:
    """Hold migrate's lock from outside; yield a count of the migrates waiting for it."""
    if url.startswith("sqlite:"):
        path = url[len("sqlite:///") :]
        fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        stat = os.fstat(fd)
        inode = f" {os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino} "

        def flock_waiters() -> int:  # the kernel lists blocked flock requests with "->"
            with open("/proc/locks") as locks:
                return sum(" -> FLOCK " in line and inode in line for line in locks)

        try:
            yield flock_waiters
        finally:
            os.close(fd)
        return
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))

    def waiting() -> int:
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s"
            # This test's database only: tests running in parallel migrate databases of their own.
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (MIGRATE_LOCK,),
        )
        return cur.fetchone()[0]

    try:
        yield waiting
    finally:
        conn.close()


def test_two_migrates_at_once_run_one_after_the_other(empty_database_url, tmp_path):
    """Two `migrate` commands started together: each waits for the migrate lock, both succeed,
    every migration is applied exactly once."""
    env = {**os.environ, "ORDERBUS_DATABASE_URL": empty_database_url, "ORDERBUS_DATA_DIR": str(tmp_path)}
    with _holding_the_migrate_lock(empty_database_url) as waiting:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "order_service", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        wait_until(lambda: waiting() == 2, 20, "both migrates waiting for the lock")
        assert [p.poll() for p in procs] == [None, None], "a migrate ran while the lock was held"
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    database = init_db(empty_database_url)
    with database.connection_context():
        versions = [r[0] for r in database.execute_sql("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in discover()]
    assert sum("applied migration" in out for out in outputs) == 1, outputs
    assert sum("schema up to date" in out for out in outputs) == 1, outputs
