"""PostgreSQL connections: the round trips a request does not need, and the ones it does.

A connection handed back to the pool moments ago is taken again without peewee's check
(``SELECT 1``); one idle longer is checked, so a connection the server cut meanwhile is
replaced, not handed to a request. ``BEGIN`` and the writer lock go in one round trip.
What the server last ran on a connection is read from ``pg_stat_activity``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import peewee
import pytest

from harness.postgres import admin_connection
from order_service.store import db as store
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL's connection pool")


@pytest.fixture
def database(database_url: str) -> Iterator[peewee.Database]:
    database = store.make_database(database_url, role="orderbus-pool-test")
    yield database
    if not database.is_closed():
        database.close()
    database.close_all()


def server_side(pid: int) -> tuple[str, str]:
    """The backend's state and the last statement it ran."""
    with contextlib.closing(admin_connection()) as conn, conn.cursor() as cur:
        cur.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone() or ("gone", "")


def checked_out(database: peewee.Database) -> int:
    """Take a connection from the pool (or the one this thread holds); its backend's pid."""
    database.connect(reuse_if_open=True)
    return int(database.connection().get_backend_pid())


def test_a_connection_back_moments_ago_is_taken_again_without_a_round_trip(database, monkeypatch):
    pid = checked_out(database)
    database.execute_sql("SELECT 'the last statement'")
    database.close()  # back to the pool
    assert checked_out(database) == pid
    assert server_side(pid) == ("idle", "SELECT 'the last statement'")
    database.close()
    # Positive control: the same connection, idle longer than the limit, is checked first.
    monkeypatch.setattr(store, "CHECK_IDLE_SECONDS", 0.0)
    assert checked_out(database) == pid
    assert server_side(pid) == ("idle", "SELECT 1")


def test_a_connection_the_server_cut_while_idle_is_replaced(database, monkeypatch):
    monkeypatch.setattr(store, "CHECK_IDLE_SECONDS", 0.0)  # "idle longer than the limit"
    pid = checked_out(database)
    database.close()
    with contextlib.closing(admin_connection()) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert cur.fetchone() == (True,)
    replacement = checked_out(database)
    assert replacement != pid
    assert database.execute_sql("SELECT 41 + 1").fetchone() == (42,)
    database.close()
    database.close_all()
    assert not database._checked_in  # the pool's closes forget when each came back


def test_begin_and_the_writer_lock_are_one_round_trip(database):
    pid = checked_out(database)
    with database.atomic():
        state, query = server_side(pid)
        assert state == "idle in transaction"
        assert query == f"BEGIN; SELECT pg_advisory_xact_lock({store.WRITER_LOCK})"
        with contextlib.closing(admin_connection()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s", (pid,)
            )
            assert cur.fetchone() == (1,)
    # Outside a transaction the lock is gone, and an outbox row is refused (the proxy's database).
    store.db.initialize(database)
    with pytest.raises(RuntimeError, match="inside db.atomic"):
        store.hold_writer_lock()


# --- writes sent with the transaction's next statement (db.write) ------------------------


@pytest.fixture
def scratch(database: peewee.Database) -> Iterator[peewee.Database]:
    """The proxy pointed at ``database``, with a table of its own."""
    store.db.initialize(database)
    database.execute_sql("CREATE TABLE scratch (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
    yield database
    if not database.is_closed():
        database.close()


def rows_of(database: peewee.Database) -> list[tuple]:
    return list(database.execute_sql("SELECT id, note FROM scratch ORDER BY id").fetchall())


def test_a_write_goes_with_the_next_statement_and_that_statement_sees_it(scratch):
    pid = checked_out(scratch)
    with scratch.atomic():
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [1, "100%"])
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [2, "two"])
        # Nothing sent yet: the server's last statement is still the BEGIN.
        assert server_side(pid)[1].startswith("BEGIN")
        assert rows_of(scratch) == [(1, "100%"), (2, "two")]  # one round trip, the writes first
        assert server_side(pid)[1].startswith("INSERT INTO scratch")
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [3, "three"])
        # Named parameters: the writes go first, on their own.
        counted = scratch.execute_sql("SELECT count(*) FROM scratch WHERE id > %(n)s", {"n": 0})
        assert counted.fetchone() == (3,)
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [4, "four"])
    assert server_side(pid) == ("idle", "INSERT INTO scratch (id, note) VALUES (4, 'four'); COMMIT")
    assert rows_of(scratch) == [(1, "100%"), (2, "two"), (3, "three"), (4, "four")]


def test_a_deferred_write_that_fails_fails_the_transaction_and_leaves_nothing(scratch):
    store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [1, "kept"])  # no transaction: now
    with pytest.raises(peewee.IntegrityError), scratch.atomic():
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [2, "not kept"])
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [1, "a duplicate"])
    assert rows_of(scratch) == [(1, "kept")]
    # A block left by an exception drops what it deferred: the next transaction does not send it.
    with pytest.raises(RuntimeError), scratch.atomic():
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [4, "rolled back"])
        raise RuntimeError("the service refused")
    with scratch.atomic():
        store.write("INSERT INTO scratch (id, note) VALUES (%s, %s)", [5, "five"])
    assert rows_of(scratch) == [(1, "kept"), (5, "five")]
