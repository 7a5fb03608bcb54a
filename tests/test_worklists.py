"""Worklists kept one order at a time (orders/worklists.py): every message is the worklist a
rebuild from the orders gives, a change costs the same whatever the worklist's length, and
a worklist the brokers could not carry is refused."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import contract
from broker.hardened import DEFAULT_MAX_PACKET_BYTES
from harness.processes import ROOT
from order_service.orders import events, service
from order_service.orders.worklists import AgentWorklist
from order_service.store.db import db
from order_service.store.models import Order, User
from tests.helpers import StatementCounter, assert_problem, latest_worklist, nothing_written

API = "/api/v1"


def _rebuilt(agent_id: str) -> dict:
    """The worklist as the orders themselves give it."""
    with db.connection_context():
        return {
            "orders": events.order_dicts(Order.active_for_agent(agent_id)),
            "offers": events.order_dicts(Order.offered_to(agent_id)),
        }


def _check(*agent_ids: str) -> None:
    for agent_id in agent_ids:
        published = latest_worklist(agent_id)
        assert {k: published[k] for k in ("orders", "offers")} == _rebuilt(agent_id)


def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.json
    return response.json


def test_each_worklist_message_equals_a_rebuild_from_the_orders(client, admin, make_agent, place_order):
    """Whatever the change (an assignment out of creation order, a status change inside the
    list, an offer to two agents, a withdrawal, an unassignment, a cancellation), the
    worklist published is exactly the one a rebuild from the orders gives; a kept worklist
    of another version (written before this module, say) is rebuilt at the next change."""
    a, b = make_agent(), make_agent()
    ids = [place_order(notes=f"order {i}")["id"] for i in range(5)]
    for oid in ids:
        _ok(client.patch(f"{API}/orders/{oid}/status", json={"status": "confirmed"}, headers=admin.headers))

    def assign(oid: str, agent_id: str) -> None:
        body = {"agent_id": agent_id, "offer": False}
        _ok(client.put(f"{API}/orders/{oid}/agent", json=body, headers=admin.headers))

    version = latest_worklist(a.agent_id)["version"]
    for oid in (ids[2], ids[0], ids[4], ids[3]):  # the last two go after and between the others
        assign(oid, a.agent_id)
        _check(a.agent_id)
    worklist = latest_worklist(a.agent_id)
    assert [o["id"] for o in worklist["orders"]] == [ids[0], ids[2], ids[3], ids[4]]
    assert worklist["version"] == version + 4

    _ok(client.patch(f"{API}/orders/{ids[2]}/status", json={"status": "preparing"}, headers=admin.headers))
    assert latest_worklist(a.agent_id)["orders"][1]["status"] == "preparing"
    _check(a.agent_id)

    body = {"agent_ids": [a.agent_id, b.agent_id]}
    _ok(client.post(f"{API}/orders/{ids[1]}/offer", json=body, headers=admin.headers))
    assert [o["id"] for o in latest_worklist(b.agent_id)["offers"]] == [ids[1]]
    _check(a.agent_id, b.agent_id)

    assign(ids[1], b.agent_id)  # withdraws a's offer
    assert latest_worklist(a.agent_id)["offers"] == []
    _check(a.agent_id, b.agent_id)

    _ok(client.delete(f"{API}/orders/{ids[3]}/agent", headers=admin.headers))
    _check(a.agent_id)

    with db.connection_context():  # as if kept before this version: rebuilt at the next change
        assert AgentWorklist.update(version=0).where(AgentWorklist.agent == a.agent_id).execute() == 1
    _ok(client.patch(f"{API}/orders/{ids[0]}/status", json={"status": "cancelled"}, headers=admin.headers))
    assert [o["id"] for o in latest_worklist(a.agent_id)["orders"]] == [ids[2], ids[4]]
    _check(a.agent_id, b.agent_id)
    with db.connection_context():
        assert AgentWorklist.get_by_id(a.agent_id).version == latest_worklist(a.agent_id)["version"]


@dataclass
class Cost:
    statements: int
    sqlite_steps: int | None  # SQLite virtual machine instructions: rows read and written


@contextmanager
def _measured() -> Iterator[Cost]:
    """Count the statements (peewee logs each at DEBUG) and, on SQLite, the instructions
    SQLite runs for them (its progress handler, called after every instruction)."""
    cost = Cost(0, None)
    counter = StatementCounter()
    with db.connection_context(), counter.attached():
        conn = db.connection()
        steps = [0]
        if isinstance(conn, sqlite3.Connection):

            def step() -> int:
                steps[0] += 1
                return 0

            conn.set_progress_handler(step, 1)
        try:
            yield cost
        finally:
            if isinstance(conn, sqlite3.Connection):
                conn.set_progress_handler(None, 1)
                cost.sqlite_steps = steps[0]
            cost.statements = counter.count


def test_an_assignment_costs_the_same_with_10_or_200_orders_held(client, admin, make_agent, place_order):
    """Assigning one more order to an agent who holds K runs the same statements, and on
    SQLite the same number of instructions (rows read and written), at K = 10 and K = 200:
    the worklist's text is updated where the order goes, not rebuilt order by order (which
    read and encoded all K, and cost an offline backlog O(K²))."""
    agent = make_agent()
    with db.connection_context():
        user = User.get(User.username == "admin")

    def confirmed_order() -> str:
        oid = place_order()["id"]
        _ok(client.patch(f"{API}/orders/{oid}/status", json={"status": "confirmed"}, headers=admin.headers))
        return oid

    def assign_one_more() -> Cost:
        oid = confirmed_order()
        with _measured() as cost:
            service.assign(user, oid, agent.agent_id)
        return cost

    held = 0
    costs = {}
    for k in (10, 200):
        while held < k:
            oid = confirmed_order()
            with db.connection_context():
                service.assign(user, oid, agent.agent_id)
            held += 1
        costs[k] = assign_one_more()
        held += 1
    assert len(latest_worklist(agent.agent_id)["orders"]) == held == 201
    small, large = costs[10], costs[200]
    assert small.statements > 0 and large.statements == small.statements, costs
    if small.sqlite_steps is not None:
        # Rebuilding read ~200 more orders and their items: thousands more instructions.
        assert small.sqlite_steps > 0 and large.sqlite_steps <= small.sqlite_steps * 1.1, costs


def test_a_worklist_too_large_for_the_brokers_is_refused(client, admin, make_agent, place_order, monkeypatch):
    """Adding an order to a worklist past its limit is refused (409 worklist-full, nothing
    written), since the brokers would refuse the message and the relay would offer it again
    and again; the orders already in it may still change up to the hard limit (8 KiB more in
    the service), not past it; taking an order out always goes through."""
    agent = make_agent()
    ids = [place_order()["id"] for _ in range(3)]
    for oid in ids:
        _ok(client.patch(f"{API}/orders/{oid}/status", json={"status": "confirmed"}, headers=admin.headers))
    body = {"agent_id": agent.agent_id, "offer": False}
    for oid in ids[:2]:
        _ok(client.put(f"{API}/orders/{oid}/agent", json=body, headers=admin.headers))
    two = len(contract.dumps(latest_worklist(agent.agent_id)).encode())
    monkeypatch.setattr(events, "MAX_WORKLIST_BYTES", two - 10)  # full already: no third order
    monkeypatch.setattr(events, "HARD_WORKLIST_BYTES", two + 60)  # room for one status's time

    with nothing_written():
        refused = client.put(f"{API}/orders/{ids[2]}/agent", json=body, headers=admin.headers)
    problem = assert_problem(refused, 409)
    assert problem["type"].endswith("/worklist-full") and problem["agent_id"] == agent.agent_id
    assert problem["limit_bytes"] == two - 10
    order = _ok(client.get(f"{API}/orders/{ids[2]}", headers=admin.headers))
    assert order["agent_id"] is None and order["version"] == 2

    # An order in it changes: its worklist grows past the first limit, within the hard one.
    moved = client.patch(f"{API}/orders/{ids[0]}/status", json={"status": "preparing"}, headers=admin.headers)
    _ok(moved)
    assert two < len(contract.dumps(latest_worklist(agent.agent_id)).encode()) <= two + 60
    with nothing_written():  # and once more: past the hard limit
        refused = client.patch(
            f"{API}/orders/{ids[0]}/status", json={"status": "ready"}, headers=admin.headers
        )
    assert assert_problem(refused, 409)["limit_bytes"] == two + 60

    _ok(client.delete(f"{API}/orders/{ids[0]}/agent", headers=admin.headers))  # shrinks: allowed
    assert [o["id"] for o in latest_worklist(agent.agent_id)["orders"]] == [ids[1]]


def test_the_worklist_limit_fits_both_brokers_message_limits() -> None:
    """The largest worklist, in a PUBLISH to the longest agent topic, is within the packet
    and message size limits of the embedded broker and of mosquitto.conf."""
    conf = (ROOT / "mosquitto.conf").read_text()
    limits = [DEFAULT_MAX_PACKET_BYTES]
    for name in ("message_size_limit", "max_packet_size"):
        found = re.search(rf"^{name}\s+(\d+)", conf, re.M)
        assert found, name
        limits.append(int(found.group(1)))
    topic = len(f"agents/{'x' * 32}/assigned")
    packet = 1 + 4 + 2 + topic + 2 + events.HARD_WORKLIST_BYTES  # header, length, topic, packet id
    assert events.MAX_WORKLIST_BYTES < events.HARD_WORKLIST_BYTES and packet <= min(limits)
