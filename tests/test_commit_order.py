"""Outbox id order is commit order, on every backend, so no cursor skips a late-committing row.

On PostgreSQL a sequence is not commit order by itself: a transaction that took
id n can commit after one that took n + 1. The writer lock (order_service/db.py)
makes the second wait; here a transaction holds its outbox row uncommitted while
another tries to write, and both ``GET /events`` and the relay see every row, in
commit order.
"""

from __future__ import annotations

import threading
import time

from order_service.orders.events import record_order_event
from order_service.store.db import db
from order_service.store.models import Order, Outbox


def _write(order_id: str, written: threading.Event, release: threading.Event | None, out: dict) -> None:
    with db.connection_context():
        with db.atomic():
            payload = record_order_event(Order.get_by_id(order_id), "order.updated")
            out["event_id"] = payload["event_id"]
            written.set()
            if release is not None:
                assert release.wait(10)
        out["committed_at"] = time.monotonic()


def test_a_late_commit_is_never_skipped(client, admin, place_order, relay, subscribe):
    first, second = place_order(), place_order()
    live = subscribe(f"orders/{first['id']}/status", f"orders/{second['id']}/status")
    cursor = client.get("/api/v1/events?limit=1000", headers=admin.headers).json["next_cursor"]

    a_written, b_written, a_release = threading.Event(), threading.Event(), threading.Event()
    a: dict = {}
    b: dict = {}
    slow = threading.Thread(target=_write, args=(first["id"], a_written, a_release, a))
    slow.start()
    assert a_written.wait(10)  # A holds its outbox row, uncommitted
    fast = threading.Thread(target=_write, args=(second["id"], b_written, None, b))
    fast.start()

    seen: list[dict] = []

    def read() -> None:
        nonlocal cursor
        page = client.get(f"/api/v1/events?after={cursor}&limit=1000", headers=admin.headers).json
        seen.extend(page["events"])
        cursor = page["next_cursor"]

    # The window under test: for a second B tries to write while A is open, and a reader keeps
    # reading (a cursor moved past B's row then would skip A's for ever).
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        read()
        time.sleep(0.05)
    assert not b_written.is_set(), "a second writer ran while the first held the outbox"
    a_release.set()
    slow.join(10)
    fast.join(10)
    assert b["committed_at"] > a["committed_at"]
    read()
    read()

    ids = [e["payload"]["event_id"] for e in seen]
    assert ids == [a["event_id"], b["event_id"]], seen
    with db.connection_context():
        rows = {r.event_id: r.id for r in Outbox.select().where(Outbox.event_id.in_(ids))}
    assert rows[a["event_id"]] < rows[b["event_id"]]  # id order = commit order

    got_b = live.wait_for(lambda r: r.json and r.json["event_id"] == b["event_id"])
    got_a = live.wait_for(lambda r: r.json and r.json["event_id"] == a["event_id"])
    assert got_a.at <= got_b.at  # the relay published them in commit order too
