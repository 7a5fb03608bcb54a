"""The whole path REST -> outbox -> relay -> broker -> paho subscriber."""

from __future__ import annotations

import json
import time

import contract
from order_service.store.db import db
from order_service.store.models import Order, Outbox
from tests.helpers import all_published, max_outbox_id, wait_until


def status_topic(order_id: str) -> str:
    return f"orders/{order_id}/status"


def worklist_topic(agent_id: str) -> str:
    return f"agents/{agent_id}/assigned"


def has_version(topic: str, version: int):
    return lambda r: r.topic == topic and r.version == version


def test_created_order_reaches_both_topics_and_late_subscribers(client, admin, relay, subscribe):
    """A new order is published on orders/new and orders/<id>/status; a later subscriber gets it retained."""
    live = subscribe("orders/#")
    order = client.post(
        "/api/v1/orders",
        json={
            "customer": {"name": "Zoë 東京", "phone": "+1 555 0100", "address": "1 Main St"},
            "items": [{"name": "Pizza 🍕", "quantity": 2, "unit_price_cents": 1299}],
        },
        headers=admin.headers,
    ).json
    new = live.wait_for(lambda r: r.topic == "orders/new")
    status = live.wait_for(has_version(status_topic(order["id"]), 1))
    for message in (new, status):
        body = message.json
        assert body["event"] == "order.created"
        assert body["order"] == order
    assert new.json["event_id"] == status.json["event_id"]

    late = subscribe(status_topic(order["id"]))
    retained = late.wait_for(lambda r: r.topic == status_topic(order["id"]))
    assert retained.retain and retained.json["order"]["customer"]["name"] == "Zoë 東京"


def test_wakes_on_commit_not_on_its_poll(client, admin, place_order, start_relay, subscribe):
    """The API wakes the relay: with a 60 s poll interval, a change still arrives promptly."""
    live = subscribe("orders/new")
    before = place_order()  # committed before the relay runs: its wake-up reaches no one
    start_relay(relay_poll_seconds=60)
    # Published by the relay's first scan. After it the relay scans again only when woken
    # (or in 60 s), so the next order can only arrive in time by its wake-up.
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == before["id"])
    order = client.post("/api/v1/orders", json=_body(), headers=admin.headers).json
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == order["id"], timeout=5)


def _body() -> dict:
    return {
        "customer": {"name": "Ann", "phone": "+1 555 0101", "address": "2 High St"},
        "items": [{"name": "Soup", "quantity": 1, "unit_price_cents": 500}],
    }


def test_status_changes_and_assignment_reach_the_right_topics(
    client, admin, make_agent, place_order, relay, subscribe
):
    """Each change publishes the order; assignment, reassignment and cancellation update both worklists."""
    a, b = make_agent(), make_agent()
    live = subscribe("orders/#", "agents/#")
    order = place_order()
    oid = order["id"]

    def patch(status: str) -> dict:
        response = client.patch(
            f"/api/v1/orders/{oid}/status", json={"status": status}, headers=admin.headers
        )
        assert response.status_code == 200, response.json
        return response.json

    assert patch("confirmed")["version"] == 2
    live.wait_for(lambda r: r.topic == status_topic(oid) and r.json["order"]["status"] == "confirmed")

    client.put(f"/api/v1/orders/{oid}/agent", json={"agent_id": a.agent_id}, headers=admin.headers)
    assigned = live.wait_for(lambda r: r.topic == worklist_topic(a.agent_id) and r.json["orders"])
    assert [o["id"] for o in assigned.json["orders"]] == [oid]
    event = live.wait_for(has_version(status_topic(oid), 3)).json
    assert event["event"] == "order.assigned" and event["order"]["agent_id"] == a.agent_id

    client.put(f"/api/v1/orders/{oid}/agent", json={"agent_id": b.agent_id}, headers=admin.headers)
    on_b = live.wait_for(lambda r: r.topic == worklist_topic(b.agent_id) and r.json["orders"])
    assert on_b.json["orders"][0]["id"] == oid and on_b.json["orders"][0]["version"] == 4
    off_a = live.wait_for(
        lambda r: (
            r.topic == worklist_topic(a.agent_id) and r.version > assigned.version and not r.json["orders"]
        )
    )
    assert off_a.json["agent_id"] == a.agent_id

    patch("preparing")
    live.wait_for(
        lambda r: (
            r.topic == worklist_topic(b.agent_id)
            and r.json["orders"]
            and r.json["orders"][0]["status"] == "preparing"
        )
    )
    patch("cancelled")
    live.wait_for(
        lambda r: r.topic == worklist_topic(b.agent_id) and r.json["orders"] == [] and r.version > 2
    )
    final = live.wait_for(has_version(status_topic(oid), 6)).json
    assert final["event"] == "order.status_changed" and final["order"]["status"] == "cancelled"
    assert set(final["order"]["status_times"]) == {"placed", "confirmed", "preparing", "cancelled"}


def test_refused_transition_publishes_nothing(client, admin, place_order, relay, subscribe):
    """A 409 or a 412 leaves the bus silent."""
    order = place_order()
    live = subscribe("orders/#")
    live.wait_for(has_version(status_topic(order["id"]), 1))
    assert (
        client.patch(
            f"/api/v1/orders/{order['id']}/status", json={"status": "delivered"}, headers=admin.headers
        ).status_code
        == 409
    )
    stale = {**admin.headers, "If-Match": '"7"'}
    assert (
        client.patch(
            f"/api/v1/orders/{order['id']}/status", json={"status": "confirmed"}, headers=stale
        ).status_code
        == 412
    )
    # Positive control: a legal change after them arrives as version 2; anything the refused
    # requests had written would have been published before it (and taken version 2).
    assert (
        client.patch(
            f"/api/v1/orders/{order['id']}/status", json={"status": "confirmed"}, headers=admin.headers
        ).status_code
        == 200
    )
    confirmed = live.wait_for(has_version(status_topic(order["id"]), 2))
    assert confirmed.json["event"] == "order.status_changed"
    assert confirmed.json["order"]["status"] == "confirmed"
    versions = [r.version for r in live.on(status_topic(order["id"]))]  # v1 may come twice:
    assert versions == sorted(versions) and set(versions) == {1, 2}, versions  # retained and live


def _assert_broker_matches_database(subscribe, timeout: float = 10.0) -> None:
    """A fresh subscriber's retained view equals the database for every order and worklist."""
    with db.connection_context():
        orders = {o.id: o.version for o in Order.select()}
    late = subscribe("orders/+/status", "agents/+/assigned")
    deadline = time.monotonic() + timeout
    while True:
        late.settle(quiet=0.5, timeout=5)
        retained = {  # amqtt may also replay other clients' retained topics (its bug; see broker/)
            r.topic.split("/")[1]: r.version
            for r in late.latest().values()
            if r.topic.startswith("orders/") and r.topic.endswith("/status") and r.payload
        }
        if retained == orders or time.monotonic() > deadline:
            break
    assert retained == orders


def test_orders_survive_a_broker_outage_in_order(
    client, admin, make_agent, place_order, broker, start_relay, subscribe, caplog
):
    """Broker down: writes still succeed; back up: every event arrives in version order, state matches."""
    agent = make_agent()
    start_relay()
    broker.stop()

    def failed_attempts() -> int:
        return sum("broker unavailable" in r.getMessage() for r in caplog.records)

    ids = []
    for _ in range(5):
        oid = place_order()["id"]
        ids.append(oid)
        for status in ("confirmed", "preparing"):
            response = client.patch(
                f"/api/v1/orders/{oid}/status", json={"status": status}, headers=admin.headers
            )
            assert response.status_code == 200
    client.put(f"/api/v1/orders/{ids[0]}/agent", json={"agent_id": agent.agent_id}, headers=admin.headers)
    failed = failed_attempts()
    wait_until(lambda: failed_attempts() > failed, 15, "the relay trying the broker again")
    with db.connection_context():
        # 5 orders x (orders/new + 3 status rows) + an assignment (status + worklist)
        assert Outbox.select().where(Outbox.published_at.is_null()).count() >= 22
    # Restart the relay after the broker, so a subscriber is there before it catches up.
    start_relay.stop_all()
    broker.start()
    live = subscribe("orders/#", "agents/#")
    start_relay()
    live.wait_for(has_version(status_topic(ids[0]), 4), timeout=15)
    # Positive control: a new order goes out after the catch-up and the republished state.
    marker = place_order()["id"]
    live.wait_for(has_version(status_topic(marker), 1))
    for oid in ids:
        versions = [r.version for r in live.on(status_topic(oid))]
        assert versions == sorted(versions), versions
        assert set(versions) >= {1, 2, 3}, versions
    wait_until(all_published, 10, "every outbox row marked published")
    _assert_broker_matches_database(subscribe)


def test_restarted_empty_broker_is_rehydrated(
    client, admin, make_agent, place_order, broker, relay, subscribe
):
    """After the broker loses its retained store, the relay rebuilds it within seconds."""
    agent = make_agent()
    ids = [place_order()["id"] for _ in range(3)]
    client.patch(f"/api/v1/orders/{ids[0]}/status", json={"status": "confirmed"}, headers=admin.headers)
    client.put(f"/api/v1/orders/{ids[0]}/agent", json={"agent_id": agent.agent_id}, headers=admin.headers)
    first = subscribe("orders/#", "agents/#")
    first.wait_for(has_version(status_topic(ids[0]), 3))
    first.stop()

    broker.stop()
    broker.start()  # empty: amqtt keeps nothing across a restart
    late = subscribe("agents/+/assigned")
    worklist = late.wait_for(lambda r: r.topic == worklist_topic(agent.agent_id), timeout=10)
    assert [o["id"] for o in worklist.json["orders"]] == [ids[0]]
    _assert_broker_matches_database(subscribe)


def test_retained_state_never_goes_backwards(client, admin, place_order, relay, subscribe):
    """A burst of changes leaves the newest version retained, whatever subscribers saw in between."""
    oid = place_order()["id"]
    for status in ("confirmed", "preparing", "ready", "cancelled"):
        client.patch(f"/api/v1/orders/{oid}/status", json={"status": status}, headers=admin.headers)
    watcher = subscribe(status_topic(oid), "orders/new")
    watcher.wait_for(has_version(status_topic(oid), 5))
    # Positive control: a later order goes out after anything the relay still had to send.
    marker = place_order()["id"]
    watcher.wait_for(lambda r: r.topic == "orders/new" and r.json["order"]["id"] == marker)
    versions = [r.version for r in watcher.on(status_topic(oid))]
    assert versions == sorted(versions), versions
    late = subscribe(status_topic(oid))
    assert late.wait_for(lambda r: r.topic == status_topic(oid)).version == 5


def test_finished_orders_retained_state_is_cleared(client, admin, place_order, start_relay, subscribe):
    """After the retention window a terminal order's retained message is cleared; live ones stay."""
    start_relay(retain_terminal_seconds=0)
    done, live_order = place_order()["id"], place_order()["id"]
    client.patch(f"/api/v1/orders/{done}/status", json={"status": "rejected"}, headers=admin.headers)
    watcher = subscribe(status_topic(done))
    watcher.wait_for(lambda r: r.payload == b"", timeout=10)

    def cleared(order_id: str) -> bool:
        with db.connection_context():
            return Order.get_by_id(order_id).retained_cleared_at is not None

    wait_until(lambda: cleared(done), 5, "the clear marked")  # once the broker has acknowledged it
    assert not cleared(live_order)
    late = subscribe("orders/+/status", "orders/new")
    # Positive control: a live change after the retained replay (anything retained comes first).
    client.patch(f"/api/v1/orders/{live_order}/status", json={"status": "confirmed"}, headers=admin.headers)
    late.wait_for(has_version(status_topic(live_order), 2))
    assert {r.topic for r in late.seen if r.payload} == {status_topic(live_order), "orders/new"}
    assert late.on("orders/new")[-1].json["order"]["id"] == live_order

    # Once the newest created order is finished too, orders/new is cleared with it.
    client.patch(f"/api/v1/orders/{live_order}/status", json={"status": "cancelled"}, headers=admin.headers)
    watcher = subscribe("orders/new")
    watcher.wait_for(lambda r: r.payload == b"", timeout=10)


def test_agent_presence_is_recorded(client, admin, make_agent, broker, relay):
    """A presence message from a device shows in GET /agents."""
    import paho.mqtt.client as mqtt

    agent = make_agent()
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{agent.agent_id}")
    device.connect(broker.host, broker.port)
    device.loop_start()
    payload = json.dumps({"agent_id": agent.agent_id, "state": "online", "at": "2026-01-01T00:00:00Z"})
    device.publish(f"agents/{agent.agent_id}/presence", payload, qos=1, retain=True).wait_for_publish(5)

    def state() -> str:
        agents = client.get("/api/v1/agents", headers=admin.headers).json["agents"]
        return next(a for a in agents if a["id"] == agent.agent_id)["presence"]["state"]

    try:
        wait_until(lambda: state() == "online", 5, "presence online in GET /agents")
    finally:
        device.disconnect()
        device.loop_stop()


def test_one_idempotent_order_one_event_on_the_bus(client, admin, place_order, relay, subscribe):
    """The same Idempotency-Key twice: one order, one order.created on orders/new."""
    live = subscribe("orders/new")
    headers = {**admin.headers, "Idempotency-Key": "retry-me"}
    first = client.post("/api/v1/orders", json=_body(), headers=headers).json
    second = client.post("/api/v1/orders", json=_body(), headers=headers).json
    assert first["id"] == second["id"]
    live.wait_for(lambda r: r.json["order"]["id"] == first["id"])
    # Positive control: another order's event comes after any second event of the first.
    marker = place_order()["id"]
    live.wait_for(lambda r: r.json["order"]["id"] == marker)
    assert len({r.json["event_id"] for r in live.seen if r.json["order"]["id"] == first["id"]}) == 1
    assert {r.json["order"]["id"] for r in live.seen} == {first["id"], marker}


def test_every_allowed_transition_is_published(client, admin, make_agent, place_order, relay, subscribe):
    """Each move of the lifecycle table, made by a role allowed to make it, reaches orders/<id>/status."""
    from order_service.lifecycle import TRANSITIONS

    agent = make_agent()
    live = subscribe("orders/+/status")
    moves = {(f, t) for f, ts in TRANSITIONS.items() for t in ts}
    # Paths from `placed` that, together, make every move at least once.
    paths = [
        ["confirmed", "preparing", "ready", "picked_up", "delivered"],
        ["confirmed", "preparing", "ready", "picked_up", "failed"],
        ["cancelled"],
        ["rejected"],
        ["confirmed", "cancelled"],
        ["confirmed", "preparing", "cancelled"],
        ["confirmed", "preparing", "ready", "cancelled"],
    ]
    made = set()
    for path in paths:
        oid, current, version = place_order()["id"], "placed", 1
        for target in path:
            if target == "picked_up":
                client.put(
                    f"/api/v1/orders/{oid}/agent", json={"agent_id": agent.agent_id}, headers=admin.headers
                )
                version += 1
            actor = agent if target in ("picked_up", "delivered", "failed") else admin
            extra = {"failure": {"reason": "refused"}} if target == "failed" else {}
            response = client.patch(
                f"/api/v1/orders/{oid}/status",
                json={"status": target, "reason": "test", **extra},
                headers=actor.headers,
            )
            assert response.status_code == 200, response.json
            version += 1
            event = live.wait_for(has_version(status_topic(oid), version)).json
            assert event["event"] == "order.status_changed"
            assert event["order"]["status"] == target
            made.add((current, target))
            current = target
    assert made == moves


def test_relay_publishes_over_websocket(client, admin, broker, start_relay, subscribe):
    """ORDERBUS_MQTT_URL=ws://host:port/mqtt works as well as mqtt://."""
    relay = start_relay(mqtt_url=f"ws://{broker.host}:{broker.ws_port}/mqtt")
    # Connected is not caught up: the marker's read, the republish and the marker go first over
    # the WebSocket (CI on a busy machine once took longer than the 5 s wait below for all of it).
    wait_until(lambda: relay.catch_ups > 0, 15, "the relay caught up over WebSocket")
    live = subscribe("orders/new")
    order = client.post("/api/v1/orders", json=_body(), headers=admin.headers).json
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == order["id"])


def test_a_restarted_empty_broker_gets_the_catalog_back(client, admin, menu, broker, relay, subscribe):
    """The catalog is retained state like an order's: after the broker restarts empty, the
    relay publishes it again, at its current version."""
    client.patch(f"/api/v1/catalog/items/{menu.tea}", json={"available": False}, headers=admin.headers)
    first = subscribe("catalog")
    first.wait_for(lambda r: r.topic == "catalog" and r.version == 6, timeout=10)
    first.stop()

    broker.stop()
    broker.start()  # empty: amqtt keeps nothing across a restart
    late = subscribe("catalog")
    late.wait_for(lambda r: r.topic == "catalog", timeout=15)  # live or retained: republished
    catalog = subscribe("catalog").wait_for(lambda r: r.topic == "catalog", timeout=10)
    assert catalog.retain and catalog.version == 6  # the broker holds it again
    assert catalog.json == client.get("/api/v1/catalog").json


def test_acknowledged_rows_are_marked_together_not_per_order(client, admin, place_order, relay, subscribe):
    """Orders sent one at a time, each waited for on the bus (so each is a batch of its own),
    are marked published together: one statement per interval, not one transaction per order."""
    live = subscribe("orders/new")
    first = max_outbox_id()
    ids = []
    for _ in range(12):
        order = place_order()
        live.wait_for(lambda r, oid=order["id"]: r.json and r.json["order"]["id"] == oid)
        ids.append(order["id"])
    wait_until(all_published, what="every acknowledged row marked published")
    with db.connection_context():
        rows = list(Outbox.select().where((Outbox.id > first) & Outbox.order_id.in_(ids)))
    assert len(rows) == 2 * len(ids)  # orders/new and orders/<id>/status of each
    marks = {row.published_at for row in rows}
    assert all(marks) and len(marks) < len(ids), sorted(marks)


def test_the_retained_marker_covers_each_order_also_when_the_sweep_marked_its_rows(
    place_order, relay, subscribe
):
    """After each order, one at a time, the broker's retained marker comes to cover it within
    a moment, wherever the order falls in the relay's once-a-second sweep. (The sweep marks
    acknowledged rows published too; when it ran in the quarter second between an order's
    PUBACK and the marker's turn, the marker was skipped and lagged until the next order.)"""
    marker = subscribe(contract.RELAY_EPOCH)
    for _ in range(12):  # each waits at least MARK_EVERY: the orders fall all over the sweep's second
        place_order()
        last = max_outbox_id()
        marker.wait_for(lambda r, last=last: _through(r.payload) == last, timeout=5)


def _through(payload: bytes) -> int | None:
    held = contract.parse_relay_epoch(payload)
    return held[1] if held else None
