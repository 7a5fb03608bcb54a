"""The Socket.IO bridge (issue #6) against the seed's Node ``socket.io-client``.

The bridge runs as its own process and knows the service only through its public
interfaces: it checks tokens with the API served over real HTTP (:class:`ApiServer`, the
same app and database the tests drive through the Flask test client) and reads MQTT.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from bridges.identity import ApiUnavailable, Identity, TokenCache, TokenChecker
from broker.server import EmbeddedBroker, pick_free_port
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import db
from tests.helpers import all_published, wait_until
from tests.socketio_fixtures import ApiServer, NodeClient, SocketBridgeProcess, node_client_ready
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def secured_broker(app, settings_overrides: dict):
    """The embedded broker enforcing the files the service writes (relay and bridge logins issued)."""
    settings = load_settings(settings_overrides)
    with db.connection_context():
        broker_logins.ensure_service(settings)
        broker_logins.ensure_bridges(settings)
        broker_logins.sync_files(settings)
    broker = EmbeddedBroker(password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def proxy(secured_broker):
    """The bridge's way to the broker, which a test may cut (the relay connects directly)."""
    proxy = TcpProxy("127.0.0.1", secured_broker.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def api_server(app):
    """The API over HTTP, where the bridge checks tokens."""
    server = ApiServer(app)
    yield server
    server.stop()


@pytest.fixture
def system(secured_broker, proxy, start_relay, api_server, data_dir, tmp_path):
    """Relay and Socket.IO bridge on the secured broker; returns the bridge."""
    node_client_ready()
    start_relay(mqtt_url=f"mqtt://127.0.0.1:{secured_broker.port}")
    bridge = SocketBridgeProcess(
        data_dir,
        f"mqtt://127.0.0.1:{proxy.port}",
        pick_free_port("127.0.0.1"),
        tmp_path / "socketio.log",
        api_server.url,
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
    later = place_order()  # positive control: a second order:new of the first would come before
    socket.event("order:new", orderId=later["id"])
    assert [e["orderId"] for e in socket.events("order:new")] == [order["id"], later["id"]]


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
    # Positive controls: one more assignment each, made after all the above.
    third, fourth = place_order(), place_order()
    confirm_and_assign(client, admin, third["id"], ann.agent_id)
    confirm_and_assign(client, admin, fourth["id"], bob.agent_id)
    ann_socket.event("order:assigned", orderId=third["id"])
    bob_socket.event("order:assigned", orderId=fourth["id"])
    assert [e["orderId"] for e in ann_socket.events("order:assigned")] == [first["id"], third["id"]]
    assert [e["orderId"] for e in bob_socket.events("order:assigned")] == [second["id"], fourth["id"]]
    # Agents are not in the admin room: no order:new for them.
    assert ann_socket.events("order:new") == []


def test_a_forbidden_join_room_is_refused(client, admin, make_agent, place_order, sockets):
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
    # Positive control: ann's own assignment, made afterwards, reaches ann's socket.
    mine = place_order()
    confirm_and_assign(client, admin, mine["id"], ann.agent_id)
    socket.event("order:assigned", orderId=mine["id"])
    assert socket.events("order:new") == []


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
    last = place_order()  # positive control: a repeat of the earlier ones would come before
    socket.event("order:new", orderId=last["id"])
    assert [e["orderId"] for e in socket.events("order:new")] == [order["id"], later["id"], last["id"]]


def bridge_subscribed(bridge) -> bool:
    try:
        with urllib.request.urlopen(bridge.url + "/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def bridge_cut_off(bridge, proxy: TcpProxy):
    """The bridge's link to the broker is down inside the block, and subscribed again after it."""
    proxy.cut()
    wait_until(lambda: not bridge_subscribed(bridge), 15, "the bridge noticing the cut")
    yield
    proxy.restore()
    wait_until(lambda: bridge_subscribed(bridge), 15, "the bridge reconnecting")


def test_changes_made_while_the_bridge_was_cut_off_reach_the_sockets(
    client, admin, place_order, sockets, system, proxy
):
    """The bridge loses the broker while the relay publishes; on its return it emits what it missed.

    The missed changes only exist as retained state by then (the relay published them while the
    bridge was away), so this fails unless the bridge treats a later session's retained replay as
    news: an order created in the gap is announced with order:new, a status change with
    order:status:updated, each once; what the sockets already had is not sent again.
    """
    socket = sockets(admin)
    socket.connected()
    known = place_order()
    socket.event("order:new", orderId=known["id"])
    with bridge_cut_off(system, proxy):
        response = client.patch(
            f"/api/v1/orders/{known['id']}/status", json={"status": "confirmed"}, headers=admin.headers
        )
        assert response.status_code == 200, response.json
        missed = place_order()
        wait_until(all_published, 15, "the relay publishing the changes")
    updated = socket.event("order:status:updated", timeout=10, orderId=known["id"], status="confirmed")
    assert updated["version"] == 2
    assert socket.event("order:new", timeout=10, orderId=missed["id"])["status"] == "placed"
    after = place_order()  # positive control: a repeat of the replayed ones would come before
    socket.event("order:new", orderId=after["id"])
    assert [e["orderId"] for e in socket.events("order:new")] == [known["id"], missed["id"], after["id"]]
    assert [e["orderId"] for e in socket.events("order:status:updated")] == [known["id"]]


def test_a_reconnect_with_nothing_missed_emits_nothing(client, admin, place_order, sockets, system, proxy):
    """After a cut with no change in between, the retained replay is not news: no event at all."""
    socket = sockets(admin)
    socket.connected()
    order = place_order()
    socket.event("order:new", orderId=order["id"])
    with bridge_cut_off(system, proxy):
        pass
    assert proxy.connections >= 2
    # Positive control: an order placed after the reconnect; the replay, had it been news,
    # would have come before it.
    after = place_order()
    socket.event("order:new", orderId=after["id"])
    assert [e["orderId"] for e in socket.events("order:new")] == [order["id"], after["id"]]
    assert socket.events("order:status:updated") == []


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


def bridge_logged(bridge, text: str) -> bool:
    return text in bridge.log.read_text()


def test_with_the_api_down_new_sockets_are_refused_and_connected_ones_stay(
    admin, make_agent, place_order, sockets, system, api_server
):
    """The bridge checks tokens with the API. While the API does not answer, a new socket is
    refused with "unavailable" (not "unauthorized": its token may be fine), and a socket
    already connected stays through the rechecks and keeps hearing events; once the API is
    back the same token connects."""
    socket = sockets(admin)
    socket.connected()
    ann = make_agent()  # a token the bridge has never seen: nothing cached
    api_server.stop()
    refused = sockets(ann)
    line = refused.wait_for(lambda m: m["type"] in ("connected", "connect_error"))
    assert line["type"] == "connect_error" and line["message"].startswith("unavailable"), line
    wait_until(lambda: bridge_logged(system, "recheck: the API at"), 15, "a recheck without the API")
    order = place_order()
    socket.event("order:new", orderId=order["id"])
    assert not [m for m in socket.seen if m["type"] == "disconnected"]
    api_server.start()
    again = sockets(ann)
    again.connected()


def counting(app, path: str, hits: list[str]):
    """The app, recording the Authorization header of every request to ``path``."""

    def wsgi(environ, start_response):
        if environ["PATH_INFO"] == path:
            hits.append(environ.get("HTTP_AUTHORIZATION", ""))
        return app(environ, start_response)

    return wsgi


def test_token_answers_are_shared_cached_and_rechecked_over_http(app, client, admin, make_agent):
    """Sockets of one token connecting together cost one request; the answer is reused while
    fresh; ``ask`` (the recheck) always asks and replaces it, so a revoked token is then
    refused from the cache; a 401 is a refusal, a dead API is ApiUnavailable."""
    hits: list[str] = []
    server = ApiServer(counting(app, "/api/v1/auth/me", hits))
    ann = make_agent()
    token = bearer(ann)
    checker = TokenChecker(server.url, TokenCache(ttl=60))

    async def connect_five():
        return await asyncio.gather(*(checker.identify(token) for _ in range(5)))

    try:
        answers = asyncio.run(connect_five())
        assert answers == [Identity(ann.user_id, "agent", ann.agent_id)] * 5
        assert len(hits) == 1
        assert asyncio.run(checker.identify(token)) == answers[0] and len(hits) == 1
        assert client.delete("/api/v1/auth/token", headers=ann.headers).status_code == 204
        assert asyncio.run(checker.identify(token)) == answers[0]  # cached: the recheck's job
        assert asyncio.run(checker.ask(token)) is None and len(hits) == 2
        assert asyncio.run(checker.identify(token)) is None and len(hits) == 2
        assert asyncio.run(checker.identify(bearer(admin))) == Identity(admin.user_id, "admin")
        assert asyncio.run(checker.identify("x" * 10_000)) is None and len(hits) == 3
    finally:
        server.stop()
    with pytest.raises(ApiUnavailable, match="does not answer"):
        asyncio.run(checker.ask(bearer(admin)))


def test_a_customer_hears_its_own_orders_only(client, admin, make_customer, place_order, sockets):
    """A customer's token puts its socket in customer:<its id>: order:new and order:status:updated
    for its own orders, as its feed shows them; another customer's room is refused."""
    ann, bob = make_customer(), make_customer()
    ann_socket, bob_socket = sockets(ann), sockets(bob)
    ann_socket.connected()
    bob_socket.connected()
    assert ann_socket.join(f"customer:{bob.user_id}") == {
        "ok": False,
        "room": f"customer:{bob.user_id}",
        "error": "forbidden",
    }
    assert ann_socket.join("admin")["ok"] is False and ann_socket.join("delivery")["ok"] is False
    assert ann_socket.join(f"customer:{ann.user_id}")["ok"] is True
    mine, theirs = place_order(ann), place_order(bob)
    new = ann_socket.event("order:new", orderId=mine["id"])
    assert new["status"] == "placed" and new["order"]["customer_address"] and "agent_id" not in new["order"]
    response = client.patch(
        f"/api/v1/orders/{mine['id']}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    ann_socket.event("order:status:updated", orderId=mine["id"], status="confirmed")
    bob_socket.event("order:new", orderId=theirs["id"])
    # Positive control: bob's next change comes after all of the above reached him.
    response = client.patch(
        f"/api/v1/orders/{theirs['id']}/status", json={"status": "cancelled"}, headers=bob.headers
    )
    assert response.status_code == 200, response.json
    bob_socket.event("order:status:updated", orderId=theirs["id"], status="cancelled")
    place_order()  # an admin's order: no customer hears it
    later = place_order(ann)
    ann_socket.event("order:new", orderId=later["id"])
    heard_by_ann = {
        e["orderId"] for name in ("order:new", "order:status:updated") for e in ann_socket.events(name)
    }
    heard_by_bob = {
        e["orderId"] for name in ("order:new", "order:status:updated") for e in bob_socket.events(name)
    }
    assert heard_by_ann == {mine["id"], later["id"]} and heard_by_bob == {theirs["id"]}
    assert ann_socket.events("order:assigned") == []
