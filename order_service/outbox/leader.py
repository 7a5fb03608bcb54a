"""Which relay publishes: a lock that exactly one relay holds for as long as it lives.

Two (or more) relays may run against one database; the one holding the lock is
*active* (connects to the broker, publishes, runs the dispatch timers), the others
are *standby* (no broker connection, no writes) and try to take the lock about
once a second. A relay killed outright (``kill -9``, a crash, a lost machine)
releases the lock with its process or its database session, so a standby takes
over within a few seconds and, like any relay starting, publishes what is pending
in id order and then republishes the current state.

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a
  dedicated connection the relay keeps open. The server releases it when that
  session ends, however it ends. The active relay checks the session before every
  publish (one ``SELECT 1``): if the lock connection is gone, it disconnects from
  the broker and becomes a standby again, so two relays never publish at once
  for longer than one publish batch after a network split (and the shared broker
  login, whose username is the client id on both brokers, makes the broker drop
  the older connection when the newer relay connects). Keep-alives and
  ``tcp_user_timeout`` bound how long a dead network path takes to notice.
- **SQLite**: ``flock`` on ``<database file>.relay-lock``; the kernel releases it
  when the process dies. One machine only, as SQLite itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

import peewee
import psycopg2
from playhouse.db_url import parse as parse_db_url

from order_service.store.db import db

logger = logging.getLogger(__name__)

# Key of the session-level advisory lock the active relay holds ("ORDRBUS2").
RELAY_LOCK = 0x4F5244524255532
APPLICATION_NAME = "orderbus-relay"
# libpq: notice a dead server within seconds rather than the kernel's hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
    "connect_timeout": 5,
}


class LeaderLock(Protocol):
    def acquire(self) -> bool:
        """Take the lock if free; True when this relay holds it (now or already)."""

    def held(self) -> bool:
        """True while the lock is still ours; False once it is lost."""

    def release(self) -> None: ...


class FileLock:
    """SQLite: an exclusive ``flock`` on a file beside the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class AdvisoryLock:
    """PostgreSQL: ``pg_try_advisory_lock`` on a connection of the relay's own.

    A standby keeps its connection too (and retries on it), so ``pg_stat_activity``
    shows every relay, active or standby, under the application name ``orderbus-relay``.
    """

    def __init__(self, url: str) -> None:
        params = parse_db_url(url, unquote_password=True, unquote_user=True)
        params = {k: v for k, v in params.items() if k in ("database", "user", "password", "host", "port")}
        self.params = {**params, **KEEPALIVES, "application_name": APPLICATION_NAME}
        self._conn: psycopg2.extensions.connection | None = None
        self._held = False
        # The relay's publishing thread and its timers thread both ask ``held()``.
        self._mutex = threading.RLock()

    def _query(self, sql: str, *args: object) -> object:
        if self._conn is None:
            self._conn = psycopg2.connect(**self.params)
            self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
            assert row is not None  # one SELECT of one value: one row
            return row[0]

    def acquire(self) -> bool:
        with self._mutex:
            if self._held:
                return self.held()
            try:
                self._held = bool(self._query("SELECT pg_try_advisory_lock(%s)", RELAY_LOCK))
            except psycopg2.Error as exc:
                logger.warning("relay lock: database unreachable (%s)", str(exc).strip())
                self.release()
            return self._held

    def held(self) -> bool:
        with self._mutex:
            if not self._held:
                return False
            try:
                self._query("SELECT 1")
                return True
            except psycopg2.Error as exc:
                logger.error("relay lock connection lost (%s): this relay is no longer active", exc)
                self.release()
                return False

    def release(self) -> None:
        with self._mutex:
            self._held = False
            if self._conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    self._conn.close()  # ends the session: the server releases the lock
                self._conn = None


def lock_for(database_url: str) -> LeaderLock:
    if database_url.startswith("sqlite:///"):
        path = unquote(database_url[len("sqlite:///") :])
        return FileLock(Path(f"{path}.relay-lock"))
    return AdvisoryLock(database_url)


def active_relay() -> bool | None:
    """Whether some relay holds the lock right now (for /metrics); None if unknown."""
    database = db.obj
    if isinstance(database, peewee.SqliteDatabase):
        path = Path(f"{database.database}.relay-lock")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while a relay holds it exclusively
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops our shared lock at once
        return False
    rows = db.execute_sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        (RELAY_LOCK,),
    ).fetchone()
    return bool(rows[0])


def relay_sessions() -> int | None:
    """PostgreSQL: relays connected to this database, active and standby; None on SQLite."""
    if isinstance(db.obj, peewee.SqliteDatabase):
        return None
    (count,) = db.execute_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        (APPLICATION_NAME,),
    ).fetchone()
    return int(count)
