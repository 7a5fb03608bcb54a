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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import peewee
import psycopg2.extensions
from flask import Flask
from peewee import __exception_wrapper__ as exception_wrapper  # type: ignore[attr-defined]
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from contract.link import masked_url

logger = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

# Key of the PostgreSQL advisory lock every transaction holds until it ends ("ORDRBUS1").
WRITER_LOCK = 0x4F5244524255531


# A pooled connection checked in less than this long ago is handed out again without the
# round trip peewee's pool makes to check it (``SELECT 1``, one more statement per request).
# One idle longer (a server restart may have cut it meanwhile) is checked as before.
CHECK_IDLE_SECONDS = 1.0


class OrderbusPostgresqlDatabase(PooledPostgresqlDatabase):
    """Pooled PostgreSQL whose transactions run one at a time, like SQLite's BEGIN IMMEDIATE.

    ``BEGIN`` and the writer lock go to the server together, in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked_in: dict[int, float] = {}  # connection key: when it came back to the pool

    # --- writes sent with the next statement ---------------------------------------------
    # A write whose result nobody reads (``write``: the hot path's inserts and saves) waits
    # for the transaction's next statement and goes with it, in one round trip: PostgreSQL
    # runs a string of statements in order, so every later read sees it. The order, its
    # lines, its history and its outbox rows reach the server together with the COMMIT. A
    # failure of a deferred write aborts the transaction and is raised by that next
    # statement (or the COMMIT), inside the same ``db.atomic()`` block or at its end.

    def defer(self, sql: str, params: list[Any]) -> None:
        """Send ``sql`` with the transaction's next statement; outside a transaction, now."""
        if not self.in_transaction():
            self.execute_sql(sql, params)
            return
        pending = getattr(self._state, "deferred", None)
        if pending is None:
            pending = self._state.deferred = []
        pending.append((sql, params))

    def _with_deferred(self, sql: str | None, params: Any) -> tuple[str, Any]:
        """The deferred writes followed by ``sql`` (None: the writes alone), as one string."""
        pending = getattr(self._state, "deferred", None)
        if not pending:
            assert sql is not None
            return sql, params
        merged: list[Any] = []
        for _, values in pending:
            merged += values
        statements = [statement for statement, _ in pending]
        pending.clear()
        if sql is None:
            return "; ".join(statements), merged
        return "; ".join([*statements, sql]), [*merged, *(params or ())]

    def _drop_deferred(self) -> None:
        pending = getattr(self._state, "deferred", None)
        if pending:
            pending.clear()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if getattr(self._state, "deferred", None):
            if isinstance(params, dict):  # named parameters do not join positional ones
                super().execute_sql(*self._with_deferred(None, ()))
            else:
                sql, params = self._with_deferred(sql, params)
        return super().execute_sql(sql, params)

    def commit(self) -> None:
        if not getattr(self._state, "deferred", None) or self.is_closed():
            super().commit()
            return
        sql, params = self._with_deferred("COMMIT", ())
        with exception_wrapper:
            self.cursor().execute(sql, params)

    def rollback(self) -> None:
        self._drop_deferred()
        super().rollback()

    def begin(self, isolation_level: str | None = None) -> None:
        self._drop_deferred()  # a transaction that ended without commit or rollback left them
        if isolation_level is not None or self._isolation_level:
            super().begin(isolation_level)
            self.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            return
        with exception_wrapper:  # peewee's errors, as its own begin() raises them
            self.cursor().execute("BEGIN; SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        self._drop_deferred()
        key = self.conn_key(conn)
        if close_conn:
            self._checked_in.pop(key, None)
        else:
            self._checked_in[key] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn: Any) -> None:
        self._checked_in.pop(self.conn_key(conn), None)  # closed by the pool (stale, unusable, close_all)
        super()._close_raw(conn)

    def _is_closed(self, conn: Any) -> bool:
        returned = self._checked_in.pop(self.conn_key(conn), None)
        if (
            returned is not None
            and time.monotonic() - returned < CHECK_IDLE_SECONDS
            and not conn.closed
            and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        ):
            return False
        return bool(super()._is_closed(conn))


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

    def take_turn(self) -> None:
        """Wait for the writers' turn now; the next ``BEGIN`` of this thread goes in it
        (store/group.py: the leader takes the queue once it holds the turn)."""
        if not self._holding():
            self.gate.acquire()
            self._gate_held.value = True

    def end_turn(self) -> None:
        """Let go of a turn :meth:`take_turn` took, if no ``COMMIT`` or ``ROLLBACK`` has."""
        self._let_go()

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


def write(sql: str, params: list[Any]) -> None:
    """A write whose result (row count, new id) nobody reads: on PostgreSQL, inside a
    transaction, it goes with the transaction's next statement
    (:meth:`OrderbusPostgresqlDatabase.defer`); otherwise it runs now."""
    database = db.obj
    if isinstance(database, OrderbusPostgresqlDatabase):
        database.defer(sql, params)
        return
    conn = database._state.conn
    if conn is None:  # not connected: peewee's path connects (autoconnect) or says why not
        db.execute_sql(sql, params)
        return
    # The connection's own execute, with peewee's errors (IntegrityError...) as its
    # execute_sql raises them: peewee's path around a statement cost more than an insert.
    with exception_wrapper:
        conn.execute(sql, params)


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

    On PostgreSQL every transaction takes the lock at ``BEGIN``
    (:class:`OrderbusPostgresqlDatabase`), so a transaction holds it already; an outbox
    row written outside a transaction is refused: in autocommit it would get an id
    while another transaction's smaller id is still uncommitted. On both backends it
    also has the :func:`on_outbox_commit` listener called once the transaction commits.
    """
    if isinstance(db.obj, OrderbusPostgresqlDatabase) and not db.in_transaction():
        raise RuntimeError("outbox rows must be written inside db.atomic()")
    # The relay hears of the rows the moment they commit, before the response is even built.
    if _outbox_listener is not None and db.in_transaction():
        pending = db._state.commit_callbacks  # (peewee's list for this transaction)
        if _after_outbox_commit not in pending:
            db.after_commit(_after_outbox_commit)


#: SQLite's ``wal_autocheckpoint`` on every connection: past this many pages of log a commit
#: checkpoints by itself. The active relay checkpoints far sooner, off the writers' turn
#: (``store/checkpoint.py``); this bounds the log (about 40 MB) of a system without one.
WAL_BACKSTOP_PAGES = 10_000


def make_database(url: str, synchronous: str = "FULL", role: str = "orderbus") -> peewee.Database:
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
                "wal_autocheckpoint": WAL_BACKSTOP_PAGES,
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
        # Who is who in pg_stat_activity: orderbus-api, orderbus-relay-data, orderbus-webhooks...
        params.setdefault("application_name", role)
        return OrderbusPostgresqlDatabase(**params)
    raise ValueError(f"unsupported database URL {masked_url(url)!r}: use sqlite:/// or postgresql://")


def init_db(url: str, synchronous: str = "FULL", role: str = "orderbus") -> peewee.Database:
    """Point the proxy at a real database (once per process; tests: once per test). ``role``
    names the process's connections to PostgreSQL (``application_name``)."""
    previous = db.obj
    database = make_database(url, synchronous, role)
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
