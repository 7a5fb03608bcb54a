"""The deferred peewee database and its lifetime.

SQLite runs in WAL mode with a busy timeout and ``BEGIN IMMEDIATE`` for every
transaction, so several API workers and the relay can share one file without
"database is locked" on upgrade from a read to a write lock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

import peewee
from flask import Flask
from playhouse.pool import PooledSqliteDatabase

logger = logging.getLogger(__name__)

db = peewee.DatabaseProxy()


def make_database(url: str, synchronous: str = "FULL") -> peewee.Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"database URL {url!r}: expected sqlite:///path/to/file.db")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A pool: "closing" at the end of a request keeps the connection, so requests skip
        # the connect, the pragmas and the WAL checkpoint SQLite runs when a last connection closes.
        return PooledSqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 10000,
                "synchronous": synchronous,
            },
            lock_type="IMMEDIATE",
            max_connections=64,
            stale_timeout=300,
            # A pooled connection is used by one thread at a time, but not always the same one.
            check_same_thread=False,
        )
    if parts.scheme in ("postgres", "postgresql"):
        from playhouse.db_url import connect

        return connect(url.replace("postgres://", "postgresql://", 1))
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def init_db(url: str, synchronous: str = "FULL") -> peewee.Database:
    """Point the proxy at a real database (once per process; tests: once per test)."""
    previous = db.obj
    database = make_database(url, synchronous)
    db.initialize(database)
    if previous is not None and hasattr(previous, "close_all"):
        previous.close_all()
    return database


def is_sqlite() -> bool:
    return isinstance(db.obj, peewee.SqliteDatabase)


def init_app(app: Flask) -> None:
    """Open a connection per request and close it afterwards."""

    @app.before_request
    def _connect() -> None:
        db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        if not db.is_closed():
            db.close()
