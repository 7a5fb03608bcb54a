"""Online backups: ``python -m order_service backup [TARGET] [--keep N]``, safe while the service runs.

SQLite: the sqlite3 backup API copies a consistent snapshot (WAL included) page by
page while writers go on. PostgreSQL: ``pg_dump --format=custom`` (a consistent
snapshot too), restored with ``pg_restore``. docs/operations.md has the restores.

A backup holds every order and every customer's address: it is written readable by its
owner only (0600), in a directory only its owner may enter when it creates one. With
``keep``, the newest ``keep`` backups of that directory stay and older ones are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from contract.link import masked_url


class BackupError(Exception):
    """The backup could not be taken; the message says why."""


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite:///"):
        return None
    return Path(unquote(database_url[len("sqlite:///") :]))


# The names default_target gives, oldest first when sorted: what ``keep`` may delete.
STAMPED = re.compile(r"^orderbus-\d{8}T\d{6}Z\.(db|dump)$")
MODE = 0o600


def _private_file(path: Path) -> Path:
    """Create ``path`` empty, readable and writable by its owner only (before any data is in it)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE))
    return path


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, not a file copy), mode 0600."""
    partial = _private_file(target.with_name(target.name + ".partial"))
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


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups named as :func:`default_target` names them
    (nothing else in ``directory`` is touched); return what was deleted."""
    stamped = sorted(p for p in directory.iterdir() if STAMPED.match(p.name) and p.is_file())
    doomed = stamped[: max(0, len(stamped) - keep)]
    for path in doomed:
        path.unlink()
    return doomed


def backup(database_url: str, target: Path) -> Path:
    """Write a backup of the database to ``target`` (mode 0600); return it."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    partial = _private_file(target.with_name(target.name + ".partial"))  # pg_dump writes into it
    # The password goes to pg_dump in its environment, not on its command line (which any
    # user of the machine may read in the process list).
    try:
        params = parse_dsn(database_url)
    except psycopg2.ProgrammingError as exc:
        raise BackupError(f"cannot read the database URL {masked_url(database_url)}: {exc}") from None
    password = params.pop("password", None)
    result = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={make_dsn(**params)}"],
        capture_output=True,
        text=True,
        env={**os.environ, **({"PGPASSWORD": password} if password else {})},
    )
    if result.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
    os.replace(partial, target)
    return target
