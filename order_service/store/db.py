"""The deferred peewee database and its lifetime.

SQLite runs in WAL mode with a busy timeout and ``BEGIN IMMEDIATE`` for every
transaction, so several API workers and the relay can share one file without
"database is locked" on upgrade from a read to a write lock.

PostgreSQL gets the same guarantee from a transaction-scoped advisory lock
(:data:`WRITER_LOCK`) taken as the first statement of every transaction: writers
run one at a time, exactly as on SQLite. That is what makes the outbox's id
order its commit order (a ``BIGSERIAL`` alone is not: ``nextval`` is handed out
at insert time, so a transaction holding id 7 may commit after the one holding
id 8, and a reader that already moved its cursor past 8 would skip 7 for ever).
Taking the lock at ``BEGIN`` rather than just before the outbox insert also
keeps lock order fixed (advisory lock first, then rows), so two writers cannot
deadlock on "row lock, then advisory lock" against "advisory lock, then row".

On SQLite, writers queue at a :class:`WriterGate` before ``BEGIN IMMEDIATE``: a
lock inside the process plus an ``flock`` on ``<database file>.write-lock``
across processes (API workers, the relay, the CLI, the bridges), held until the
transaction ends. SQLite's own busy handler polls for its write lock with sleeps
of 1, 2, 5, 10 ... 100 ms, so writers that met at ``BEGIN`` slept while the lock
stood free; a writer blocked in ``flock`` is woken by the kernel the moment the
holder lets go. ``busy_timeout`` stays for writers that do not take the gate
(statements outside a transaction, other tools on the file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import peewee
from flask import Flask
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from contract.link import masked_url

logger = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

# Key of the PostgreSQL advisory lock every transaction holds until it ends ("ORDRBUS1").
WRITER_LOCK = 0x4F5244524255531


class OrderbusPostgresqlDatabase(PooledPostgresqlDatabase):
    """Pooled PostgreSQL whose transactions run one at a time, like SQLite's BEGIN IMMEDIATE."""

    def begin(self, isolation_level: str | None = None) -> None:
        super().begin(isolation_level)
        self.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))


# SQLite: how long a writer waits for another thread of its process before "database is locked".
GATE_TIMEOUT = 30.0


class WriterGate:
    """One writer at a time: a thread lock for this process, an ``flock`` for all processes.

    ``path`` is the lock file (``None``: this process only, e.g. an in-memory database).
    The file is opened once per process (after a fork the child opens its own: a
    descriptor shared with the parent would share its lock too).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            assert self.path is not None
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        if not self._thread_lock.acquire(timeout=GATE_TIMEOUT):
            raise peewee.OperationalError(f"database is locked (no turn to write in {GATE_TIMEOUT:.0f} s)")
        if self.path is None:
            return
        try:
            fd = self._file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(fd, fcntl.LOCK_EX)  # sleeps in the kernel until the holder lets go
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            if self.path is not None and self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class OrderbusSqliteDatabase(PooledSqliteDatabase):
    """Pooled SQLite whose transactions pass the :class:`WriterGate` before ``BEGIN IMMEDIATE``."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        lock_file = None if database == ":memory:" else Path(f"{database}.write-lock")
        self.gate = WriterGate(lock_file)
        self._gate_held = threading.local()

    def _holding(self) -> bool:
        return getattr(self._gate_held, "value", False)

    def _let_go(self) -> None:
        if self._holding():
            self._gate_held.value = False
            self.gate.release()

    def begin(self, lock_type: str | None = None) -> None:
        if not self._holding():
            self.gate.acquire()
            self._gate_held.value = True
        try:
            super().begin(lock_type)
        except BaseException:
            self._let_go()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            # A failed COMMIT leaves the transaction open; the rollback that follows lets go.
            if not self._in_sqlite_transaction():
                self._let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_go()

    def _in_sqlite_transaction(self) -> bool:
        conn = self._state.conn
        try:
            return conn is not None and conn.in_transaction
        except Exception:  # a closed connection holds no transaction
            return False

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        try:
            super()._close(conn, close_conn)
        finally:
            self._let_go()  # a connection handed back mid-transaction (the pool rolls it back)


class Prepared:
    """A hot-path query whose SQL is built once per database and run with new parameters.

    peewee builds a query's SQL text anew on every execution, which took longer than
    SQLite took to run the statements of the hot paths (the relay's outbox queries, the
    token lookup). ``build`` returns the query with placeholder values; ``execute`` runs
    its SQL with the given parameters (default: the placeholders) and returns the rows.
    """

    def __init__(self, build: Callable[[], peewee.Query]) -> None:
        self._build = build
        self._built: tuple[peewee.Database, str, list] | None = None

    def execute(self, *params: object) -> list[tuple]:
        database = db.obj
        built = self._built
        if built is None or built[0] is not database:
            sql, placeholders = self._build().sql()
            built = self._built = (database, sql, placeholders)
        cursor = db.execute_sql(built[1], params or built[2])
        return cursor.fetchall() if cursor.description else []


# Called once after each COMMIT of a transaction that wrote outbox rows (the API: wake the relay).
_outbox_listener: Callable[[], None] | None = None


def on_outbox_commit(listener: Callable[[], None] | None) -> None:
    """Have ``listener`` called right after every commit that wrote outbox rows (this process)."""
    global _outbox_listener
    _outbox_listener = listener


def _after_outbox_commit() -> None:
    if _outbox_listener is not None:
        _outbox_listener()


def hold_writer_lock() -> None:
    """Check that this transaction holds the writer lock before it writes outbox rows.

    On PostgreSQL every transaction takes the lock at ``BEGIN``; the outbox writers
    call this as well (re-taking a held advisory lock returns at once), and an outbox
    row written outside a transaction is refused: in autocommit it would get an id
    while another transaction's smaller id is still uncommitted. On both backends it
    also has the :func:`on_outbox_commit` listener called once the transaction commits.
    """
    if isinstance(db.obj, OrderbusPostgresqlDatabase):
        if not db.in_transaction():
            raise RuntimeError("outbox rows must be written inside db.atomic()")
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
    # The relay hears of the rows the moment they commit, before the response is even built.
    if _outbox_listener is not None and db.in_transaction():
        pending = db._state.commit_callbacks  # (peewee's list for this transaction)
        if _after_outbox_commit not in pending:
            db.after_commit(_after_outbox_commit)


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
        return OrderbusSqliteDatabase(
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
        params = parse_db_url(url, unquote_password=True, unquote_user=True)
        if not params.get("database"):
            raise ValueError(f"database URL {masked_url(url)!r}: expected postgresql://user@host:port/dbname")
        # Each API worker process and the relay has its own pool; a connection is returned at the
        # end of each request, so the pool holds at most one per concurrent request thread.
        params.setdefault("max_connections", 20)
        params.setdefault("stale_timeout", 300)
        params.setdefault("timeout", 30)  # wait for a free connection rather than fail at once
        return OrderbusPostgresqlDatabase(**params)
    raise ValueError(f"unsupported database URL {masked_url(url)!r}: use sqlite:/// or postgresql://")


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
