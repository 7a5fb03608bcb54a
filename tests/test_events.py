"""Worklist payloads (events.record_worklists): built in a few queries, same orders as REST."""

from __future__ import annotations

import json
import logging

from order_service.orders.events import record_worklists
from order_service.store.db import db
from order_service.store.models import Outbox
from tests.helpers import StatementCounter, latest_worklist, outbox

API = "/api/v1"
ITEMS = [
    {"name": "Soup", "quantity": 1, "unit_price_cents": 500},
    {"name": "Bread 🥖", "quantity": 3, "unit_price_cents": 120},
    {"name": "Apple", "quantity": 2, "unit_price_cents": 90},
]


def test_worklist_orders_and_offers_match_the_rest_api(client, admin, make_agent, place_order):
    """Each order in a worklist (``orders`` and ``offers``) is exactly the order as REST shows it,
    items in their position order, whatever query the worklist was built with."""
    agent = make_agent()
    ids = [place_order(items=ITEMS[i:] + ITEMS[:i], notes=f"order {i}")["id"] for i in range(3)]
    for oid in ids:
        r = client.patch(f"{API}/orders/{oid}/status", json={"status": "confirmed"}, headers=admin.headers)
        assert r.status_code == 200, r.json
    for oid in ids[:2]:
        _assign(client, admin, oid, agent.agent_id)
    r = client.post(
        f"{API}/orders/{ids[2]}/offer", json={"agent_ids": [agent.agent_id]}, headers=admin.headers
    )
    assert r.status_code == 200, r.json
    listed = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=admin.headers).json
    worklist = latest_worklist(agent.agent_id)
    assert [o["id"] for o in worklist["orders"]] == ids[:2]
    assert [o["id"] for o in worklist["offers"]] == ids[2:]
    assert worklist["orders"] == listed["orders"]
    assert worklist["offers"] == listed["offers"]
    assert [i["name"] for i in worklist["orders"][1]["items"]] == ["Bread 🥖", "Apple", "Soup"]


def test_a_worklist_costs_the_same_few_queries_whatever_its_size(client, admin, make_agent, place_order):
    """Building a worklist runs a fixed number of queries, not one more per order in it
    (assigning K orders to one agent used to cost K² item queries)."""
    agent = make_agent()

    def queries_for_worklist() -> int:
        counter = StatementCounter()
        with db.connection_context(), db.atomic() as tx:
            with counter.attached():
                record_worklists([agent.agent_id])
            tx.rollback()
        return counter.count

    def assign_new_order() -> None:
        oid = place_order(items=ITEMS)["id"]
        client.patch(f"{API}/orders/{oid}/status", json={"status": "confirmed"}, headers=admin.headers)
        _assign(client, admin, oid, agent.agent_id)

    assign_new_order()
    small = queries_for_worklist()
    assert small > 0
    for _ in range(5):
        assign_new_order()
    assert queries_for_worklist() == small


def _assign(client, admin, order_id: str, agent_id: str) -> None:
    body = {"agent_id": agent_id, "offer": False}
    r = client.put(f"{API}/orders/{order_id}/agent", json=body, headers=admin.headers)
    assert r.status_code == 200, r.json


class _QueryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def test_the_response_is_the_published_order_text(client, admin, make_customer, menu):
    """An order is encoded once per change: the body of POST /orders and of a status change is,
    byte for byte, the ``order`` inside the outbox payload of that change; the customer who
    placed it also gets its delivery code, which the bus never carries."""
    customer = make_customer()
    placed = client.post(f"{API}/orders", json=menu.order(), headers=customer.headers)
    assert placed.status_code == 201, placed.json
    order_id = placed.json["id"]
    changed = client.patch(
        f"{API}/orders/{order_id}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.json
    ids = [row["id"] for row in outbox(order_id=order_id, kind="status")]
    with db.connection_context():
        texts = [row.payload for row in Outbox.select().where(Outbox.id.in_(ids)).order_by(Outbox.id)]
    assert [json.loads(text)["order"]["version"] for text in texts] == [1, 2]
    code = placed.json["delivery_code"]
    assert code and "delivery_code" not in texts[0]
    suffix = ',"delivery_code":"' + code + '"}'
    customer_view = placed.get_data(as_text=True).rstrip("\n")
    assert customer_view.endswith(suffix)
    assert '"order":' + customer_view.removesuffix(suffix) + "}" in texts[0]
    assert '"order":' + changed.get_data(as_text=True).rstrip("\n") in texts[1]
    assert placed.json == {**json.loads(texts[0])["order"], "delivery_code": code}
