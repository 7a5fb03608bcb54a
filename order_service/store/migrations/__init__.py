"""Numbered schema migrations, applied in order by ``python -m order_service migrate``.

Each module ``mNNNN_<name>.py`` defines ``up(db, t)`` where ``t`` maps portable
type names to the dialect's SQL. Applied versions are recorded in
``schema_migrations``; on SQLite a copy of the database file is taken before
any pending migration runs. Migrations are never edited once released: add a
new one.

Two ``migrate`` commands started at once (two hosts deploying, say) run one after
the other: PostgreSQL holds a session-level advisory lock (:data:`MIGRATE_LOCK`)
and SQLite a ``flock`` beside the database file while reading what is applied and
applying the rest, so the second finds the work done.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import peewee

from order_service.store.backup import copy_sqlite

logger = logging.getLogger(__name__)

# Key of the advisory lock `migrate` holds on PostgreSQL ("ORDRBUS3").
MIGRATE_LOCK = 0x4F5244524255533

SQLITE_TYPES = {
    "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "bigpk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "ts": "DATETIME",
    "bool": "INTEGER",
    "bigint": "INTEGER",
}
POSTGRES_TYPES = {
    "pk": "SERIAL PRIMARY KEY",
    "bigpk": "BIGSERIAL PRIMARY KEY",
    "ts": "TIMESTAMP",
    "bool": "BOOLEAN",
    "bigint": "BIGINT",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Callable[[peewee.Database, dict[str, str]], None]


def discover() -> list[Migration]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        match = re.fullmatch(r"m(\d{4})_(\w+)", info.name)
        if match:
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(Migration(int(match.group(1)), match.group(2), module.up))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


def applied_versions(db: peewee.Database, t: dict[str, str]) -> set[int]:
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        f" version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {t['ts']} NOT NULL)"
    )
    return {row[0] for row in db.execute_sql("SELECT version FROM schema_migrations")}


def _backup_sqlite(db: peewee.SqliteDatabase, current: int) -> Path | None:
    path = Path(db.database)
    if not path.exists() or path.stat().st_size == 0:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.v{current:04d}.{stamp}.bak")
    copy_sqlite(path, target)
    return target


@contextlib.contextmanager
def _exclusive(db: peewee.Database) -> Iterator[None]:
    """One migrate at a time per database (call with the connection open)."""
    if not isinstance(db, peewee.SqliteDatabase):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
        return
    if db.database == ":memory:":
        yield
        return
    fd = os.open(f"{db.database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def migrate(db: peewee.Database, log: Callable[[str], None] = logger.info) -> list[int]:
    """Apply every pending migration; return the versions applied."""
    sqlite = isinstance(db, peewee.SqliteDatabase)
    t = SQLITE_TYPES if sqlite else POSTGRES_TYPES
    with db.connection_context(), _exclusive(db):
        done = applied_versions(db, t)
        pending = [m for m in discover() if m.version not in done]
        if not pending:
            log(f"schema up to date (version {max(done, default=0)})")
            return []
        if isinstance(db, peewee.SqliteDatabase) and done:
            backup = _backup_sqlite(db, max(done))
            if backup:
                log(f"backed up database to {backup}")
        for m in pending:
            with db.atomic():
                m.up(db, t)
                db.execute_sql(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
                    if sqlite
                    else "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (m.version, m.name, datetime.now(UTC).replace(tzinfo=None)),
                )
            log(f"applied migration {m.version:04d}_{m.name}")
        return [m.version for m in pending]
