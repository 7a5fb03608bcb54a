"""SQLite writers queue at the writer gate (order_service/db.py), never in SQLite's busy handler.

SQLite's busy handler waits for the write lock by sleeping (1, 2, 5 ... 100 ms), so
writers that met at ``BEGIN IMMEDIATE`` slept while the lock stood free. With every
connection's ``busy_timeout`` at 0, a writer that ever found SQLite's write lock taken
would fail at once with "database is locked": here none does, across processes and
threads, and no increment is lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import peewee
import pytest

from harness.processes import ROOT
from order_service.store.db import OrderbusSqliteDatabase, make_database

pytestmark = pytest.mark.skipif(
    __import__("tests.conftest", fromlist=["BACKEND"]).BACKEND != "sqlite", reason="SQLite's gate"
)

THREADS, ROUNDS = 4, 150

# One process: THREADS threads, each ROUNDS read-increment-write transactions, busy_timeout 0.
WORKER = f"""
import sys, threading
from order_service.store.db import make_database
database = make_database("sqlite:///" + sys.argv[1])
errors = []

def work():
    try:
        with database.connection_context():
            database.execute_sql("PRAGMA busy_timeout = 0")
            for _ in range({ROUNDS}):
                with database.atomic():
                    (value,) = database.execute_sql("SELECT value FROM counter").fetchone()
                    database.execute_sql("UPDATE counter SET value = ?", (value + 1,))
                    database.execute_sql("INSERT INTO log (pid) VALUES (?)", (threading.get_ident(),))
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work) for _ in range({THREADS})]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("\\n".join(errors))
sys.exit(1 if errors else 0)
"""


def _database(tmp_path: Path) -> tuple[Path, peewee.Database]:
    path = tmp_path / "gate.db"
    database = make_database(f"sqlite:///{path}")
    with database.connection_context():
        database.execute_sql("CREATE TABLE counter (value INTEGER NOT NULL)")
        database.execute_sql("INSERT INTO counter VALUES (0)")
        database.execute_sql("CREATE TABLE log (id INTEGER PRIMARY KEY, pid INTEGER)")
    return path, database


def test_writers_across_processes_never_meet_sqlites_lock(tmp_path):
    path, database = _database(tmp_path)
    assert isinstance(database, OrderbusSqliteDatabase)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs  # no "database is locked"
    with database.connection_context():
        (value,) = database.execute_sql("SELECT value FROM counter").fetchone()
        (rows,) = database.execute_sql("SELECT COUNT(*) FROM log").fetchone()
    assert value == rows == 2 * THREADS * ROUNDS  # no lost update
    assert Path(f"{path}.write-lock").exists()


def test_the_gate_is_let_go_after_rollback_and_failed_commit(tmp_path):
    """A transaction that raises, or whose connection goes back to the pool mid-transaction,
    leaves the gate free: the next writer (in another thread) gets in."""
    _, database = _database(tmp_path)

    def write_in_thread() -> list[str]:
        done: list[str] = []

        def run() -> None:
            with database.connection_context(), database.atomic():
                database.execute_sql("UPDATE counter SET value = value + 1")
            done.append("ok")

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)
        return done

    with database.connection_context():
        with pytest.raises(ZeroDivisionError), database.atomic():
            database.execute_sql("UPDATE counter SET value = value + 100")
            1 / 0  # noqa: B018
    assert write_in_thread() == ["ok"]

    with database.connection_context():
        with pytest.raises(peewee.IntegrityError), database.atomic():
            database.execute_sql("INSERT INTO log (id) VALUES (1)")
            database.execute_sql("INSERT INTO log (id) VALUES (1)")
    assert write_in_thread() == ["ok"]

    with database.connection_context():
        (value,) = database.execute_sql("SELECT value FROM counter").fetchone()
    assert value == 2  # the failed transactions wrote nothing


def test_no_turn_to_write_in_time_is_a_503_and_writes_nothing(client, admin, monkeypatch):
    """A writer that waits longer than GATE_TIMEOUT for its turn gets 503 problem+json with
    Retry-After (not a 500), nothing is written, and the same request succeeds afterwards."""
    from order_service.store import db as db_module
    from order_service.store.models import Order
    from tests.test_relay import _body

    monkeypatch.setattr(db_module, "GATE_TIMEOUT", 0.3)
    gate = db_module.db.obj.gate
    with db_module.db.connection_context():
        before = Order.select().count()
    gate.acquire()  # another writer holds the gate for longer than the timeout
    try:
        response = client.post("/api/v1/orders", json=_body(), headers=admin.headers)
    finally:
        gate.release()
    assert response.status_code == 503, response.json
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "1"
    assert response.json["type"].endswith("/database-unavailable")
    with db_module.db.connection_context():
        assert Order.select().count() == before
    assert client.post("/api/v1/orders", json=_body(), headers=admin.headers).status_code == 201
