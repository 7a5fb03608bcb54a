"""Worklist payloads (events.record_worklists): built in a few queries, same orders as REST."""

from __future__ import annotations

from order_service.orders.events import record_worklists
from order_service.store.db import db
from tests.helpers import StatementCounter, latest_worklist

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
