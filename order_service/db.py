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
        return peewee.SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 10000,
                "synchronous": synchronous,
            },
            lock_type="IMMEDIATE",
            timeout=10,
        )
    if parts.scheme in ("postgres", "postgresql"):
        from playhouse.db_url import connect

        return connect(url.replace("postgres://", "postgresql://", 1))
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def init_db(url: str, synchronous: str = "FULL") -> peewee.Database:
    """Point the proxy at a real database (once per process)."""
    database = make_database(url, synchronous)
    db.initialize(database)
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
