"""Group commit (order_service/store/group.py): orders placed at the same moment in one API
process share one SQLite transaction, each in a savepoint of its own; one at a time, each is
a transaction of its own. Real threads on the real app and a real SQLite file.

To make "at the same moment" certain rather than likely, a test takes the writers' turn
itself (an open write transaction) while the orders come in, waits until they are all
queued, then lets go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee
import pytest

from order_service.store import db as store_db
from order_service.store import group
from order_service.store.db import db
from tests.conftest import order_body
from tests.helpers import API, assert_problem, outbox, wait_until

pytestmark = pytest.mark.skipif(
    __import__("tests.conftest", fromlist=["BACKEND"]).BACKEND != "sqlite", reason="SQLite's group commit"
)


@contextmanager
def the_turn_held() -> Iterator[None]:
    """Hold the writers' turn (a write transaction on a thread of its own) until the block ends."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connection_context(), db.atomic():
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        holder.join(10)


def at_once(client, requests: list[Callable[[], Any]]) -> list[Any]:
    """Run ``requests`` on threads of their own while the turn is held; their answers."""
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        answers[i] = requests[i]()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    with the_turn_held():
        for thread in threads:
            thread.start()
        wait_until(lambda: group.group.waiting() == len(requests), 10, "every order queued for the turn")
    for thread in threads:
        thread.join(20)
    return answers


def counters() -> tuple[int, int]:
    return group.group.transactions, group.group.turns


def test_orders_placed_at_once_share_one_transaction(client, admin) -> None:
    before = counters()
    post = lambda: client.post(f"{API}/orders", json=order_body(), headers=admin.headers)  # noqa: E731
    answers = at_once(client, [post] * 6)
    assert [a.status_code for a in answers] == [201] * 6
    assert sorted(a.json["number"] for a in answers) == [1, 2, 3, 4, 5, 6]
    transactions, turns = counters()
    assert (transactions - before[0], turns - before[1]) == (1, 6)  # six orders, one commit
    # Every order's event went out, numbered in the outbox's (the commit's) order.
    assert [r["payload"]["order"]["number"] for r in outbox(topic="orders/new")] == [1, 2, 3, 4, 5, 6]

    # The positive control: one at a time, each is a transaction of its own.
    before = counters()
    for _ in range(3):
        assert client.post(f"{API}/orders", json=order_body(), headers=admin.headers).status_code == 201
    transactions, turns = counters()
    assert (transactions - before[0], turns - before[1]) == (3, 3)


def test_a_refused_order_is_rolled_back_alone_and_a_replay_sees_its_twin(client, admin) -> None:
    """In one transaction: four new orders; a key reused with another body (refused: 422);
    the same new key twice with the same body (one order, and its replay)."""
    used = {**admin.headers, "Idempotency-Key": "key-used-before"}
    first = client.post(f"{API}/orders", json=order_body(), headers=used)
    assert first.status_code == 201
    twin = {**admin.headers, "Idempotency-Key": "key-sent-twice"}
    requests = [lambda: client.post(f"{API}/orders", json=order_body(), headers=admin.headers)] * 4
    requests.append(lambda: client.post(f"{API}/orders", json=order_body(notes="another body"), headers=used))
    requests += [lambda: client.post(f"{API}/orders", json=order_body(notes="twins"), headers=twin)] * 2
    before = counters()
    answers = at_once(client, requests)
    assert counters()[0] - before[0] == 1

    assert [a.status_code for a in answers[:4]] == [201] * 4
    assert_problem(answers[4], 422, "Idempotency-Key")
    twins = answers[5:]
    assert [a.status_code for a in twins] == [201, 201]
    assert twins[0].json["id"] == twins[1].json["id"]
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in twins) == ["", "true"]
    # Written: the first order, the four, the twins' one; numbered without a gap.
    listed = client.get(f"{API}/orders?limit=50", headers=admin.headers).json["orders"]
    assert sorted(o["number"] for o in listed) == [1, 2, 3, 4, 5, 6]
    assert len(outbox(topic="orders/new")) == 6


def test_status_changes_at_once_share_one_transaction_and_a_refused_one_is_its_own(client, admin) -> None:
    placed = [client.post(f"{API}/orders", json=order_body(), headers=admin.headers).json for _ in range(4)]

    def move(order: dict, status: str) -> Callable[[], Any]:
        url = f"{API}/orders/{order['id']}/status"
        return lambda: client.patch(url, json={"status": status}, headers=admin.headers)

    before = counters()
    answers = at_once(client, [move(o, "confirmed") for o in placed[:3]] + [move(placed[3], "delivered")])
    assert counters()[0] - before[0] == 1
    assert [a.status_code for a in answers[:3]] == [200] * 3
    assert [a.json["version"] for a in answers[:3]] == [2, 2, 2]
    assert_problem(answers[3], 409)  # placed -> delivered is no transition
    listed = client.get(f"{API}/orders", headers=admin.headers).json["orders"]
    statuses = {o["id"]: o["status"] for o in listed}
    assert [statuses[o["id"]] for o in placed] == ["confirmed", "confirmed", "confirmed", "placed"]
    assert len(outbox(topic=f"orders/{placed[3]['id']}/status")) == 1  # its placing only


def test_no_turn_in_time_writes_none_of_the_queued_orders(client, admin, monkeypatch) -> None:
    monkeypatch.setattr(store_db, "GATE_TIMEOUT", 0.5)
    post = lambda: client.post(f"{API}/orders", json=order_body(), headers=admin.headers)  # noqa: E731
    answers: list[Any] = []
    with the_turn_held():  # held past the timeout: the leader gives up, and with it every queued order
        threads = [threading.Thread(target=lambda: answers.append(post())) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert len(answers) == 3
    for answer in answers:
        assert_problem(answer, 503)
    assert outbox(topic="orders/new") == []
    # The turn free again: the next order is written, and is #1.
    assert client.post(f"{API}/orders", json=order_body(), headers=admin.headers).json["number"] == 1


def test_a_transaction_sqlite_rolled_back_writes_none_of_its_turns(app) -> None:
    """If SQLite ends the whole transaction under one turn (a full disk, an I/O error), the
    turns before it are gone too: every turn of it fails, and nothing is left written,
    including by the turns after it (which would otherwise run outside any transaction)."""
    db.execute_sql("CREATE TABLE marks (name TEXT NOT NULL)")
    db.close()

    def mark(name: str) -> Callable[[], str]:
        def write() -> str:
            with db.atomic():
                db.execute_sql("INSERT INTO marks VALUES (?)", (name,))
            return name

        return write

    def lose_everything() -> str:
        with db.atomic():
            db.execute_sql("INSERT INTO marks VALUES ('lost')")
            db.execute_sql("ROLLBACK")  # as SQLite does on some errors: the whole transaction
            raise peewee.OperationalError("the transaction was rolled back")

    outcomes = run_at_once([mark("a"), lose_everything, mark("b")])
    assert all(isinstance(o, peewee.DatabaseError) for o in outcomes), outcomes
    with db.connection_context():
        assert db.execute_sql("SELECT name FROM marks").fetchall() == []

    # The positive control: the same turns without the rollback are all written.
    assert run_at_once([mark("a"), mark("b")]) == ["a", "b"]
    with db.connection_context():
        assert [r[0] for r in db.execute_sql("SELECT name FROM marks ORDER BY rowid")] == ["a", "b"]


def run_at_once(turns: list[Callable[[], Any]]) -> list[Any]:
    """``group.run`` of each turn on a thread of its own, queued together; each one's result
    or exception."""
    outcomes: list[Any] = [None] * len(turns)

    def run(i: int) -> None:
        with db.connection_context():
            try:
                outcomes[i] = group.run(turns[i])
            except Exception as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(turns))]
    with the_turn_held():
        for i, thread in enumerate(threads):  # one by one: the queue keeps their order
            thread.start()
            wait_until(lambda i=i: group.group.waiting() == i + 1, 10, "the turn queued")
    for thread in threads:
        thread.join(20)
    return outcomes


def test_a_turn_inside_a_transaction_is_part_of_it(app) -> None:
    """``group.run`` from inside an open transaction (a script placing orders in its own
    transaction) runs the turn there and then: it neither waits for itself nor commits early."""
    db.execute_sql("CREATE TABLE marks (name TEXT NOT NULL)")

    def write() -> str:
        with db.atomic():
            db.execute_sql("INSERT INTO marks VALUES ('inner')")
        return "inner"

    class Undo(Exception):
        pass

    before = counters()
    with pytest.raises(Undo), db.atomic():
        assert group.run(write) == "inner"
        raise Undo  # the outer transaction's end decides: rolled back, nothing of it stays
    assert counters() == before
    assert db.execute_sql("SELECT count(*) FROM marks").fetchone() == (0,)
    # The positive control: outside a transaction the same turn is counted and committed.
    assert group.run(write) == "inner"
    assert counters()[0] == before[0] + 1
    assert db.execute_sql("SELECT count(*) FROM marks").fetchone() == (1,)
