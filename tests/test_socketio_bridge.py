"""The Socket.IO bridge (issue #6) against the seed's Node ``socket.io-client``."""

from __future__ import annotations

import pytest

from broker.server import EmbeddedBroker, pick_free_port
from order_service import mqtt_auth
from order_service.config import load_settings
from order_service.db import db
from tests.socketio_fixtures import NodeClient, SocketBridgeProcess, node_client_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def secured_broker(app, settings_overrides: dict):
    """The embedded broker enforcing the files the service writes (relay and bridge logins issued)."""
    settings = load_settings(settings_overrides)
    with db.connection_context():
        mqtt_auth.ensure_service(settings)
        mqtt_auth.ensure_bridge(settings)
        mqtt_auth.sync_files(settings)
    broker = EmbeddedBroker(password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def system(secured_broker, start_relay, data_dir, database_url, tmp_path):
    """Relay and Socket.IO bridge on the secured broker; returns the bridge."""
    node_client_ready()
    url = f"mqtt://127.0.0.1:{secured_broker.port}"
    start_relay(mqtt_url=url)
    bridge = SocketBridgeProcess(
        data_dir, url, pick_free_port("127.0.0.1"), tmp_path / "socketio.log", database_url
    )
    try:
        bridge.ready()
        yield bridge
    finally:
        bridge.stop()


@pytest.fixture
def sockets(system):
    made: list[NodeClient] = []

    def connect(actor_or_token) -> NodeClient:
        token = actor_or_token if isinstance(actor_or_token, str) else bearer(actor_or_token)
        made.append(NodeClient(system.url, token))
        return made[-1]

    yield connect
    for client in made:
        client.close()


def bearer(actor) -> str:
    return actor.headers["Authorization"].removeprefix("Bearer ")


def confirm_and_assign(client, admin, order_id: str, agent_id: str) -> None:
    response = client.patch(
        f"/api/v1/orders/{order_id}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    response = client.put(
        f"/api/v1/orders/{order_id}/agent", json={"agent_id": agent_id}, headers=admin.headers
    )
    assert response.status_code == 200, response.json


def test_admin_socket_gets_order_new_and_status_updated(client, admin, place_order, sockets):
    """An admin's socket (room admin) hears order:new on POST and order:status:updated on PATCH."""
    socket = sockets(admin)
    socket.connected()
    order = place_order()
    new = socket.event("order:new", orderId=order["id"])
    assert new["status"] == "placed" and new["version"] == 1
    assert new["order"]["id"] == order["id"] and new["timestamp"].endswith("Z")
    assert "estimatedTime" in new and new["event"] == "order.created" and new["eventId"]
    response = client.patch(
        f"/api/v1/orders/{order['id']}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert response.status_code == 200
    updated = socket.event("order:status:updated", orderId=order["id"], status="confirmed")
    assert updated["version"] == 2 and updated["order"]["status"] == "confirmed"
    assert len(socket.events("order:new", quiet=0.5)) == 1


def test_agents_hear_their_own_assignments_only(client, admin, make_agent, place_order, sockets):
    """order:assigned reaches delivery:<agentId> of the assigned agent and no other agent."""
    ann, bob = make_agent(), make_agent()
    ann_socket, bob_socket = sockets(ann), sockets(bob)
    ann_socket.connected()
    bob_socket.connected()
    first, second = place_order(), place_order()
    confirm_and_assign(client, admin, first["id"], ann.agent_id)
    confirm_and_assign(client, admin, second["id"], bob.agent_id)
    assert ann_socket.event("order:assigned", orderId=first["id"])["agentId"] == ann.agent_id
    assert bob_socket.event("order:assigned", orderId=second["id"])["agentId"] == bob.agent_id
    assert [e["orderId"] for e in ann_socket.events("order:assigned")] == [first["id"]]
    assert [e["orderId"] for e in bob_socket.events("order:assigned", quiet=0)] == [second["id"]]
    # Agents are not in the admin room: no order:new for them.
    assert ann_socket.events("order:new", quiet=0) == []


def test_a_forbidden_join_room_is_refused(admin, make_agent, place_order, sockets):
    """An agent may not join admin or another agent's room; its own rooms are fine."""
    ann, bob = make_agent(), make_agent()
    socket = sockets(ann)
    socket.connected()
    assert socket.join("admin") == {"ok": False, "room": "admin", "error": "forbidden"}
    assert socket.join(f"delivery:{bob.agent_id}")["ok"] is False
    assert socket.join(f"delivery:{ann.agent_id}")["ok"] is True
    assert socket.join("delivery")["ok"] is True
    watcher = sockets(admin)
    watcher.connected()
    assert watcher.join(f"delivery:{bob.agent_id}")["ok"] is True
    order = place_order()
    watcher.event("order:new", orderId=order["id"])
    assert socket.events("order:new", quiet=0.5) == []


def test_a_bad_token_is_refused_at_connect(admin, sockets):
    """A token that is not a live REST token is refused in the handshake (connect_error)."""
    for token in ("not-a-token", ""):
        socket = sockets(token)
        line = socket.wait_for(lambda m: m["type"] in ("connected", "connect_error"))
        assert line["type"] == "connect_error", line
        assert "unauthorized" in line["message"]


def test_the_bridge_keeps_working_across_a_broker_restart(secured_broker, admin, place_order, sockets):
    """After the broker restarts on its port, sockets hear new orders again (bridge and relay reconnect)."""
    socket = sockets(admin)
    socket.connected()
    order = place_order()
    socket.event("order:new", orderId=order["id"])
    secured_broker.stop()
    secured_broker.start()
    later = place_order()
    socket.event("order:new", timeout=20, orderId=later["id"])
    assert [e["orderId"] for e in socket.events("order:new", quiet=0.5)] == [order["id"], later["id"]]


def test_logging_out_disconnects_the_socket(client, admin, sockets):
    """A socket whose token is revoked (DELETE /auth/token) is disconnected and cannot come back."""
    socket = sockets(admin)
    socket.connected()
    assert client.delete("/api/v1/auth/token", headers=admin.headers).status_code == 204
    assert (
        socket.wait_for(lambda m: m["type"] == "disconnected", timeout=10)["reason"] == "io server disconnect"
    )
    again = sockets(admin)
    line = again.wait_for(lambda m: m["type"] in ("connected", "connect_error"))
    assert line["type"] == "connect_error" and "unauthorized" in line["message"]
