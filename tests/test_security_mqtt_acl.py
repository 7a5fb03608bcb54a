"""Attacks on the broker's ACL and logins, on both brokers: the embedded one and Mosquitto.

Each test runs against the embedded broker and against a Mosquitto started from the
repository's mosquitto.conf, with the logins and files the service issues. Absence is
proven with a positive control: a message that must arrive *after* the forbidden ones
would have (same publisher, in order), or the relay's own publish in the same window.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timedelta

import paho.mqtt.client as mqtt

from contract import agent_presence, presence
from order_service.accounts.sync import LoginFileSync
from order_service.accounts.users import token_digest
from order_service.store.db import db
from order_service.store.models import MqttCredential, Token, utcnow
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import API, assign, wait_until, walk_to
from tests.test_broker_security import (  # noqa: F401 (fixtures)
    Client,
    Target,
    broker_kind,
    connect,
    login_accepted,
    refused,
    relays,
    service,
    settings_overrides,
    target,
)

REFUSED_BY_PAHO = (134, 135)  # CONNACK 4 and 5 as paho reports them: bad login, not authorised
FORGED = b'{"forged": true}'
# What an agent may try to subscribe to beyond agents/<its id>/#.
WIDE_FILTERS = (
    "#",
    "agents/#",
    "orders/#",
    "+/+/+",
    "agents/+/assigned",
    "agents/+/presence",
    "$SYS/#",
    "$share/g/orders/#",
    "$share/g/agents/#",
    "$share/g/#",
)


@contextmanager
def device(target: Target, agent):
    """The agent's device, connected with its own login; closed on leaving (one at a time)."""
    client = Client(target, agent.agent_id, agent.mqtt["password"], client_id=agent.agent_id)
    assert client.ok, client.rc
    try:
        yield client
    finally:
        client.close()


# --- subscriptions ---------------------------------------------------------------------


def test_an_agents_wide_subscriptions_deliver_only_its_own_topics(
    target: Target, connect, make_agent, subtests
):
    """``#``, ``agents/#``, ``+/+/+``, ``$SYS/#``, ``$share/<group>/...``: the embedded broker
    refuses each (0x80); Mosquitto grants it and delivers nothing the ACL forbids. Neither
    live nor retained messages of others arrive, shared subscriptions included."""
    one, two = make_agent(), make_agent()
    own = f"agents/{one.agent_id}/assigned"
    feed = connect(*service(target))
    # Retained state of others, there before the agent subscribes.
    feed.publish(f"agents/{two.agent_id}/assigned", b'{"of": "two"}', retain=True)
    feed.publish("orders/o_retained/status", b'{"of": "an order"}', retain=True)
    for n, wide in enumerate(WIDE_FILTERS):
        with subtests.test(filter=wide), device(target, one) as me:
            granted = me.subscribe(wide, own)
            assert granted[1] == 1, granted
            if target.kind == "amqtt":
                assert granted[0] == 0x80, granted
            feed.publish(f"agents/{two.agent_id}/assigned", b'{"live": "two"}')
            feed.publish(f"agents/{two.agent_id}/presence", b'{"live": "two"}')
            feed.publish(f"orders/o_{n}/status", b'{"live": "order"}')
            feed.publish("orders/new", b'{"live": "new"}')
            control = json.dumps({"control": n}).encode()
            feed.publish(own, control)  # after the others, from the same publisher
            assert me.wait_for(own).payload == control
            leaked = {m.topic for m in me.messages if not m.topic.startswith(f"agents/{one.agent_id}/")}
            assert not leaked, f"{wide} delivered {leaked}"


def test_a_shared_subscription_is_live_for_a_login_that_may_read(target: Target, connect, admin):
    """The positive control of the test above: on Mosquitto a dashboard's
    ``$share/<group>/orders/#`` does receive orders, so the agent's empty result is the
    ACL at work. The embedded broker has no shared subscriptions: it refuses the filter."""
    board = connect(admin.mqtt["username"], admin.mqtt["password"])
    granted = board.subscribe("$share/board/orders/#")
    feed = connect(*service(target))
    if target.kind == "amqtt":
        assert granted == [0x80]
        return
    assert granted == [1]
    feed.publish("orders/o_shared/status", b'{"shared": true}')
    assert board.wait_for("orders/o_shared/status").payload == b'{"shared": true}'


# --- publishes --------------------------------------------------------------------------


def test_spoofed_publishes_reach_no_one_and_leave_the_retained_state_alone(
    target: Target, relays, connect, client, admin, make_agent, place_order
):
    """An agent's device forges an order's status (and clears its retained state), a new
    order, another agent's presence and worklist, and its own worklist. Nothing reaches a
    subscriber, the relay records no presence for the other agent, and a newcomer reads
    the service's state. Controls: the agent's own presence, published after the forgeries
    on the same connection, reaches the dashboard and the relay; the service's next
    publish of the order arrives."""
    relays()
    one, two = make_agent(), make_agent()
    order = place_order()
    walk_to(client, admin, order["id"], "confirmed")
    assert assign(client, admin, order["id"], one.agent_id).status_code == 200
    status_topic = f"orders/{order['id']}/status"
    board = connect(admin.mqtt["username"], admin.mqtt["password"], ws=True)
    assert board.subscribe("orders/#", "agents/#") == [1, 1]
    board.wait_for(status_topic)

    forgeries = [
        (
            status_topic,
            json.dumps({"order": {**order, "status": "delivered", "version": 999}}).encode(),
            True,
        ),
        (status_topic, b"", True),  # an empty retained message would erase the order's state
        ("orders/new", FORGED, False),
        ("orders/o_forged/status", FORGED, True),
        (agent_presence(two.agent_id), presence(two.agent_id, "online", "2030-01-01T00:00:00Z"), True),
        (f"agents/{two.agent_id}/assigned", FORGED, True),
        (f"agents/{one.agent_id}/assigned", FORGED, True),
    ]
    with device(target, one) as spoofer:
        for topic, payload, retain in forgeries:
            spoofer.publish(topic, payload, retain=retain)
        own_presence = presence(one.agent_id, "online", utcnow().isoformat().replace("+00:00", "Z"))
        spoofer.publish(agent_presence(one.agent_id), own_presence)  # allowed: the control
        assert board.wait_for(agent_presence(one.agent_id)).payload == own_presence
        # The relay heard the control, so it would have heard the forged presence too.
        wait_until(lambda: _presence(client, admin, one.agent_id) == "online", what="the control's presence")
    assert _presence(client, admin, two.agent_id) == "unknown"
    before = len(board.messages)
    response = client.patch(
        f"{API}/orders/{order['id']}/status", json={"status": "preparing"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    version = response.json["version"]
    wait_until(lambda: any(_version(m) == version for m in board.messages[before:]), what="the service's")
    forged_payloads = {payload for _, payload, _ in forgeries}
    delivered = [(m.topic, m.payload) for m in board.messages if m.payload in forged_payloads]
    assert not delivered, f"forged messages were delivered: {delivered}"

    # A newcomer (another admin login) reads the retained state: the service's, no forgery.
    newcomer = _admin_login(client)["mqtt"]
    assert login_accepted(target, newcomer["username"], newcomer["password"])
    fresh = connect(newcomer["username"], newcomer["password"])
    fresh.subscribe("orders/#", "agents/#")
    later = place_order()  # its live publish comes after the retained replay
    fresh.wait_for(f"orders/{later['id']}/status")
    retained = {m.topic: m.payload for m in fresh.messages if m.retain}
    assert _version_of(retained[status_topic]) == version
    assert json.loads(retained[f"agents/{one.agent_id}/assigned"])["orders"][0]["id"] == order["id"]
    assert "orders/o_forged/status" not in retained
    assert agent_presence(two.agent_id) not in retained
    assert not forged_payloads & set(retained.values())


def _presence(client, admin, agent_id: str) -> str:
    response = client.get(f"{API}/agents/{agent_id}", headers=admin.headers)
    assert response.status_code == 200, response.json
    return response.json["presence"]["state"]


def _version_of(payload: bytes) -> int | None:
    try:
        return json.loads(payload)["order"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


def _version(message: mqtt.MQTTMessage) -> int | None:
    return _version_of(message.payload)


# --- logins -------------------------------------------------------------------------------


def test_the_websocket_listener_refuses_anonymous_and_wrong_logins(
    target: Target, connect, admin, make_agent
):
    """The dashboards' listener (MQTT over WebSocket) refuses what the TCP one refuses."""
    agent = make_agent()
    dash = admin.mqtt
    assert connect(dash["username"], dash["password"], ws=True).ok  # positive control
    attempts = {
        "anonymous": (None, None),
        "username only": (dash["username"], None),
        "wrong secret": (dash["username"], dash["password"][:-1] + "x"),
        "unknown user": ("dash_nobody", dash["password"]),
        "REST password": ("admin", ADMIN_PASSWORD),
        "another login's secret": (dash["username"], agent.mqtt["password"]),
    }
    for what, (username, password) in attempts.items():
        attempt = connect(username, password, ws=True)
        assert attempt.rc in REFUSED_BY_PAHO, f"{what}: CONNACK {attempt.rc}"


def _admin_login(client) -> dict:
    response = client.post(f"{API}/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.json
    return response.json


def test_a_connected_dashboard_is_cut_off_when_its_token_ends(target: Target, connect, client, admin):
    """Logout and expiry each end the dashboard login of that token: its connected
    dashboard is disconnected and the login refused; the token is a 401 over REST. The
    dashboard of another token of the same admin stays connected and keeps receiving."""
    first, second = _admin_login(client), _admin_login(client)
    boards = {}
    for name, login in (("first", first), ("second", second)):
        assert login_accepted(target, login["mqtt"]["username"], login["mqtt"]["password"])
        boards[name] = connect(login["mqtt"]["username"], login["mqtt"]["password"], ws=True)
        assert boards[name].subscribe("orders/#") == [1]
    feed = connect(*service(target))

    headers = {"Authorization": f"Bearer {first['access_token']}"}
    assert client.delete(f"{API}/auth/token", headers=headers).status_code == 204
    wait_until(lambda: not boards["first"].client.is_connected(), what="logged out, disconnected")
    assert refused(target, first["mqtt"]["username"], first["mqtt"]["password"])
    assert client.get(f"{API}/auth/me", headers=headers).status_code == 401
    feed.publish("orders/o_after_logout/status", b'{"n": 1}')
    boards["second"].wait_for("orders/o_after_logout/status")  # the other token's board lives on

    with db.connection_context():  # time passes: the second token and its dashboard login expire
        past = utcnow() - timedelta(seconds=1)
        Token.update(expires_at=past).where(
            Token.token_hash == token_digest(second["access_token"])
        ).execute()
        MqttCredential.update(expires_at=past).where(
            MqttCredential.username == second["mqtt"]["username"]
        ).execute()
    LoginFileSync(target.settings).sync_now()  # what the active relay runs every few seconds
    wait_until(lambda: not boards["second"].client.is_connected(), what="expired, disconnected")
    assert refused(target, second["mqtt"]["username"], second["mqtt"]["password"])
    expired = {"Authorization": f"Bearer {second['access_token']}"}
    assert client.get(f"{API}/auth/me", headers=expired).status_code == 401
    # Positive control: the fixture's own admin token and its dashboard login are untouched.
    assert client.get(f"{API}/auth/me", headers=admin.headers).status_code == 200
    assert login_accepted(target, admin.mqtt["username"], admin.mqtt["password"])
