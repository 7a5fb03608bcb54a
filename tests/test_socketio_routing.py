"""The Socket.IO bridge's routing table, room rules, token cache and settings (no server)."""

from __future__ import annotations

import json

import pytest

from bridges.identity import TokenCache
from bridges.settings import BridgeSettings, MissingBridgeSecret
from bridges.socketio import Gate, Identity, route


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
    assert customer.default_rooms() == ["customer:usr_3"] and customer.may_join("customer:usr_3")
    assert not customer.may_join("admin") and not customer.may_join("customer:usr_4")
    assert not customer.may_join("delivery") and not customer.may_join("customer:usr_3:x")
    assert admin.may_join("customer:usr_3")
    assert Identity("usr_5", "stranger").default_rooms() == []


def payload(name: str, version: int, status: str = "confirmed", order_id: str = "ord_1") -> bytes:
    body = event(name, version=version, status=status, id=order_id)
    return json.dumps(body).encode()


def test_the_gate_emits_only_newer_versions_and_catches_up_on_a_later_session():
    """Live: newer versions only. First session's retained replay: recorded, not emitted.
    A later session's retained replay: what is newer is emitted, a new order as order:new first."""
    gate = Gate()
    status = "orders/ord_1/status"
    # Start-up: the broker's retained state is what clients load over REST.
    assert gate.emits(status, payload("order.confirmed", 2), retained=True, first_session=True) == []
    # A relay retry of the same version, live: a duplicate.
    assert gate.emits(status, payload("order.confirmed", 2), retained=False, first_session=True) == []
    live = gate.emits(
        status, payload("order.status_changed", 3, "preparing"), retained=False, first_session=True
    )
    assert [(n, d["version"]) for n, _, d in live] == [("order:status:updated", 3)]
    # Reconnected: the replay of what was already emitted is not news; a newer state is.
    assert gate.emits(status, payload("order.status_changed", 3), retained=True, first_session=False) == []
    caught = gate.emits(
        status, payload("order.status_changed", 5, "ready"), retained=True, first_session=False
    )
    assert [(n, d["status"]) for n, _, d in caught] == [("order:status:updated", "ready")]
    # An order created while the bridge was away: announced, then its latest change.
    other = "orders/ord_2/status"
    gap = gate.emits(
        other, payload("order.assigned", 3, order_id="ord_2"), retained=True, first_session=False
    )
    assert [n for n, _, _ in gap] == ["order:new", "order:assigned"]
    assert (
        gate.emits(
            "orders/new", payload("order.created", 1, "placed", "ord_2"), retained=True, first_session=False
        )
        == []
    )


def test_the_gate_forgets_a_cleared_order_and_ignores_what_is_not_an_order():
    gate = Gate()
    assert gate.emits(
        "orders/ord_1/status", payload("order.confirmed", 2), retained=False, first_session=True
    )
    assert gate.emits("orders/ord_1/status", b"", retained=False, first_session=True) == []
    assert gate.emits(
        "orders/ord_1/status", payload("order.confirmed", 2), retained=False, first_session=True
    )
    worklist = json.dumps({"event": "agent.worklist", "agent_id": "agt_a", "version": 4}).encode()
    assert gate.emits("agents/agt_a/assigned", worklist, retained=False, first_session=True) == []
    with pytest.raises(ValueError):
        gate.emits("orders/ord_1/status", b"not json", retained=False, first_session=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_token_cache_forgets_after_its_ttl_and_holds_a_bounded_number():
    clock = Clock()
    cache = TokenCache(ttl=5, size=2, clock=clock)
    ann = Identity("usr_1", "agent", "agt_a")
    cache.put("t1", ann)
    cache.put("t2", None)  # a refusal is an answer too
    assert cache.get("t1") == (True, ann) and cache.get("t2") == (True, None)
    clock.now += 4.9
    assert cache.get("t1") == (True, ann)
    cache.put("t2", ann)  # replaced: the recheck's newer answer
    clock.now += 0.2
    assert cache.get("t1") == (False, None) and cache.get("t2") == (True, ann)
    for token in ("t3", "t4", "t5"):
        cache.put(token, ann)
    assert len(cache) == 2 and cache.get("t3") == (False, None) and cache.get("t5") == (True, ann)
    off = TokenCache(ttl=0, clock=clock)
    off.put("t1", ann)
    assert off.get("t1") == (False, None)


def test_settings_follow_the_service_variables(monkeypatch, tmp_path):
    """Same ORDERBUS_* names and defaults as the service; the API URL from its host and port;
    the cache window never longer than the recheck period; the bridge login from its file."""
    for name in ("ORDERBUS_API_URL", "ORDERBUS_MQTT_URL", "ORDERBUS_SOCKETIO_TOKEN_CACHE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORDERBUS_API_HOST", "0.0.0.0")
    monkeypatch.setenv("ORDERBUS_API_PORT", "15000")
    monkeypatch.setenv("ORDERBUS_BROKER_PORT", "18830")
    monkeypatch.setenv("ORDERBUS_SOCKETIO_RECHECK_SECONDS", "4")
    monkeypatch.setenv("ORDERBUS_DATA_DIR", str(tmp_path))
    settings = BridgeSettings()
    assert settings.api_url == "http://127.0.0.1:15000/api/v1"
    assert settings.mqtt_url == "mqtt://127.0.0.1:18830"
    assert settings.token_cache_seconds == 4 and settings.socketio_token_cache_seconds == 10
    assert BridgeSettings(api_url="https://api.example/api/v1/").api_url == "https://api.example/api/v1"
    with pytest.raises(MissingBridgeSecret, match="bootstrap"):
        settings.broker_address()
    (tmp_path / "mqtt").mkdir()
    (tmp_path / "mqtt" / "socketio-secret").write_text("s3cret\n")
    address = BridgeSettings(mqtt_url="mqtt://relay:relay-secret@broker.example:1884").broker_address()
    assert (address.host, address.port) == ("broker.example", 1884)
    assert (address.username, address.password) == ("orderbus-socketio", "s3cret")
    with pytest.raises(ValueError, match="ORDERBUS_API_URL"):
        BridgeSettings(api_url="ftp://x")


def feed(version: int, *orders: tuple[str, str], eta: str | None = None) -> bytes:
    body = {
        "schema": 1,
        "event": "customer.orders",
        "event_id": "e" * 32,
        "occurred_at": "2026-01-01T00:00:00.000Z",
        "version": version,
        "customer_id": "usr_3",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "orders": [{"id": oid, "number": None, "status": st, "eta": eta} for oid, st in orders],
    }
    return json.dumps(body).encode()


def test_a_customers_feed_becomes_events_for_its_own_room_only():
    """A feed message emits, to customer:<id> only, order:new for an order new to the feed and
    order:status:updated for one whose view changed; an older or equal version nothing."""
    gate = Gate()
    topic = "customers/usr_3/orders"
    # The first session's retained replay is recorded only.
    assert gate.emits(topic, feed(2, ("ord_1", "placed")), retained=True, first_session=True) == []
    created = gate.emits(
        topic, feed(3, ("ord_2", "placed"), ("ord_1", "placed")), retained=False, first_session=True
    )
    assert [(n, r, d["orderId"], d["status"]) for n, r, d in created] == [
        ("order:new", ["customer:usr_3"], "ord_2", "placed")
    ]
    moved = gate.emits(
        topic, feed(4, ("ord_2", "confirmed"), ("ord_1", "placed")), retained=False, first_session=True
    )
    assert [(n, d["orderId"], d["status"], d["version"]) for n, _, d in moved] == [
        ("order:status:updated", "ord_2", "confirmed", 4)
    ]
    assert gate.emits(topic, feed(4, ("ord_2", "ready")), retained=False, first_session=True) == []
    assert gate.emits(topic, feed(3, ("ord_2", "ready")), retained=True, first_session=False) == []
    # A later session's replay: what changed while the bridge was away.
    eta = "2026-01-01T00:40:00.000Z"
    caught = gate.emits(
        topic,
        feed(9, ("ord_2", "picked_up"), ("ord_1", "placed"), eta=eta),
        retained=True,
        first_session=False,
    )
    assert {(d["orderId"], d["status"], d["estimatedTime"]) for _, _, d in caught} == {
        ("ord_2", "picked_up", eta),
        ("ord_1", "placed", eta),
    }
    # Another customer's feed goes to that customer's room.
    other = gate.emits(
        "customers/usr_4/orders", feed(1, ("ord_9", "placed")), retained=False, first_session=True
    )
    assert [r for _, r, _ in other] == [["customer:usr_4"]]
