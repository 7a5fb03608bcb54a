"""The Socket.IO bridge's routing table and room rules (pure functions, no server)."""

from __future__ import annotations

from bridges.socketio import Identity, route


def event(name: str, agent_id: str | None = None, **order) -> dict:
    return {
        "schema": 1,
        "event": name,
        "event_id": "e1",
        "occurred_at": "2026-01-01T00:00:00.000Z",
        "order": {
            "id": "ord_1",
            "version": 2,
            "status": "confirmed",
            "agent_id": agent_id,
            "eta": None,
            **order,
        },
    }


def test_each_mqtt_event_maps_to_the_seed_event_and_rooms():
    """orders/new → order:new (admin); assignment → order:assigned (admin, the agent); others → status."""
    assert [(n, r) for n, r, _ in route("orders/new", event("order.created"))] == [("order:new", ["admin"])]
    assert route("orders/ord_1/status", event("order.created")) == []
    assert [(n, r) for n, r, _ in route("orders/ord_1/status", event("order.assigned", "agt_a"))] == [
        ("order:assigned", ["admin", "delivery:agt_a"])
    ]
    assert [(n, r) for n, r, _ in route("orders/ord_1/status", event("order.status_changed"))] == [
        ("order:status:updated", ["admin"])
    ]
    assert [(n, r) for n, r, _ in route("orders/ord_1/status", event("order.status_changed", "agt_a"))] == [
        ("order:status:updated", ["admin", "delivery:agt_a"])
    ]
    assert route("agents/agt_a/assigned", {"event": "agent.worklist", "agent_id": "agt_a"}) == []
    (_, _, data) = route("orders/new", event("order.created", eta="2026-01-01T00:30:00.000Z"))[0]
    assert data["orderId"] == "ord_1" and data["estimatedTime"] == "2026-01-01T00:30:00.000Z"
    assert data["timestamp"] == "2026-01-01T00:00:00.000Z" and data["version"] == 2


def test_rooms_each_role_may_join():
    """Agents: delivery and their own room; admins: any room; customers: none."""
    agent = Identity("usr_1", "agent", "agt_a")
    assert agent.may_join("delivery") and agent.may_join("delivery:agt_a")
    assert not agent.may_join("admin") and not agent.may_join("delivery:agt_b")
    assert not agent.may_join("delivery:agt_a:x") and not agent.may_join("order:ord_1")
    admin = Identity("usr_2", "admin")
    assert admin.may_join("admin") and admin.may_join("delivery") and admin.may_join("delivery:agt_b")
    customer = Identity("usr_3", "customer")
    assert customer.default_rooms() == [] and not customer.may_join("admin")
