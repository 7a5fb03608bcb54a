"""Online backups: ``python -m order_service backup [TARGET]``, safe while the service runs.

SQLite: the sqlite3 backup API copies a consistent snapshot (WAL included) page by
page while writers go on. PostgreSQL: ``pg_dump --format=custom`` (a consistent
snapshot too), restored with ``pg_restore``. docs/operations.md has the restores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote


class BackupError(Exception):
    """The backup could not be taken; the message says why."""


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite:///"):
        return None
    return Path(unquote(database_url[len("sqlite:///") :]))


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, not a file copy)."""
    partial = target.with_name(target.name + ".partial")
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(partial, target)  # a backup file is whole or absent


def default_target(data_dir: Path, database_url: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "db" if sqlite_path(database_url) else "dump"
    return data_dir / "backups" / f"orderbus-{stamp}.{suffix}"


def backup(database_url: str, target: Path) -> Path:
    """Write a backup of the database to ``target``; return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite_path(database_url)
    if source is not None:
        if not source.exists():
            raise BackupError(f"no database file at {source}")
        copy_sqlite(source, target)
        return target
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError(
            "pg_dump not found: install the PostgreSQL client (apt-get install postgresql-client)"
        )
    partial = target.with_name(target.name + ".partial")
    result = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={database_url}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
    os.replace(partial, target)
    return target
