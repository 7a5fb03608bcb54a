"""Numbered migrations: one command, idempotent, and readiness follows the schema."""

from __future__ import annotations

import sqlite3

import pytest

from order_service.db import db, init_db
from order_service.migrations import discover, migrate


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
