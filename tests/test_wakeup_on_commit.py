"""The relay is woken by the commit of outbox rows itself, once per transaction, never for a rollback.

The API used to wake the relay after the response was built; now the datagram leaves
right after ``COMMIT`` (order_service/db.py ``on_outbox_commit``), so the relay reads the
rows while the API still encodes its answer.
"""

from __future__ import annotations

import pytest

from order_service.orders.events import record_order_event
from order_service.outbox.wakeup import Waiter
from order_service.store import db as dbmod
from order_service.store.db import db
from order_service.store.models import Order


@pytest.fixture
def commits(app):
    """Count the listener's calls (the app's own listener, the relay's wake-up, is put back)."""
    calls: list[bool] = []
    previous = dbmod._outbox_listener
    dbmod.on_outbox_commit(lambda: calls.append(db.in_transaction()))
    yield calls
    dbmod.on_outbox_commit(previous)


def test_posting_an_order_wakes_the_relay(app, place_order):
    waiter = Waiter(app.config["ORDERBUS"].wakeup_socket)
    try:
        place_order()
        assert waiter.wait(5)
    finally:
        waiter.close()


def test_a_wait_of_zero_seconds_only_looks(app, place_order):
    """The relay's wait may come out at 0 s (a scan due right now): it looks, it does not raise."""
    waiter = Waiter(app.config["ORDERBUS"].wakeup_socket)
    try:
        assert waiter.wait(0) is False
        place_order()  # a Unix datagram is queued by the time sendto returns
        assert waiter.wait(0) is True
    finally:
        waiter.close()


def test_one_call_per_committed_transaction_after_the_commit(client, admin, place_order, commits):
    order = place_order()
    assert commits == [False]  # once (two outbox rows), and outside the transaction: committed
    with db.connection_context():
        with db.atomic():
            record_order_event(Order.get_by_id(order["id"]), "order.updated")
            record_order_event(Order.get_by_id(order["id"]), "order.updated")
        assert commits == [False, False]
        with pytest.raises(RuntimeError), db.atomic():
            record_order_event(Order.get_by_id(order["id"]), "order.updated")
            raise RuntimeError("rolled back")
    assert commits == [False, False]  # nothing committed, nothing to wake the relay for
