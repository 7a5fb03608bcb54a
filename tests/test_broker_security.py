"""The security boundary and delivery promises, on both brokers: ours (amqtt) and Mosquitto.

Each test runs twice: against the embedded broker and against a Mosquitto started
from the repository's mosquitto.conf. Both read the password and ACL files that
the service writes from its database; every login here is one the REST API issued.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest

from broker.server import EmbeddedBroker
from harness.mosquitto import Mosquitto
from order_service.accounts import broker_logins
from order_service.config import Settings, load_settings
from order_service.store.db import db
from order_service.store.models import Agent, new_id
from tests import both_brokers
from tests.helpers import all_published, assign, wait_until, walk_to
from tests.mqtt_fixtures import RelayRunner
from tests.mqtt_raw import RawClient

REFUSED = (4, 5)  # CONNACK: bad username or password, not authorised

# Every test on each broker: the embedded one and Mosquitto.
broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides


@dataclass
class Target:
    kind: str
    host: str
    port: int
    ws_port: int
    settings: Settings


@pytest.fixture
def target(app, settings_overrides: dict, broker_kind: str, data_dir) -> Iterator[Target]:
    settings = load_settings(settings_overrides)
    with db.connection_context():
        broker_logins.ensure_service(settings)
        broker_logins.sync_files(settings)
    if broker_kind == "mosquitto":
        server = Mosquitto(data_dir, settings.mqtt_password_path, settings.mqtt_acl_path).start()
        yield Target("mosquitto", server.host, server.port, server.ws_port, settings)
        server.stop()
    else:
        broker = EmbeddedBroker(password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path)
        broker.start()
        yield Target("amqtt", broker.host, broker.port, broker.ws_port, settings)
        broker.stop()


@pytest.fixture
def relays(target: Target, settings_overrides: dict) -> Iterator[RelayRunner]:
    runner = RelayRunner(
        {
            **settings_overrides,
            "mqtt_url": f"mqtt://{target.host}:{target.port}",
            "relay_poll_seconds": 0.5,
        }
    )
    yield runner
    runner.stop_all()


class Client:
    """A paho client that records what it receives; ``rc`` is the CONNACK result."""

    def __init__(self, target: Target, username=None, password=None, *, client_id=None, ws=False, **kw):
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[int] = []
        self._event = threading.Condition()
        self.rc: int | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or new_id("c"),
            transport="websockets" if ws else "tcp",
            reconnect_on_failure=False,
            **kw,
        )
        if ws:
            self.client.ws_set_options(path="/mqtt")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *a: self._notify()
        port = target.ws_port if ws else target.port
        self.client.connect(target.host, port, keepalive=30)
        self.client.loop_start()
        with self._event:
            self._event.wait_for(lambda: self.rc is not None, 10)

    def _notify(self) -> None:
        with self._event:
            self._event.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.rc = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        self._notify()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.granted.extend(rc.value for rc in reason_codes)
        self._notify()

    def _on_message(self, client, userdata, message) -> None:
        with self._event:
            self.messages.append(message)
            self._event.notify_all()

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def subscribe(self, *filters: str) -> list[int]:
        before = len(self.granted)
        self.client.subscribe([(f, 1) for f in filters])
        with self._event:
            self._event.wait_for(lambda: len(self.granted) >= before + len(filters), 5)
        return self.granted[before:]

    def wait_for(self, topic: str, timeout: float = 5.0, payload: bytes | None = None) -> mqtt.MQTTMessage:
        """The first message on ``topic`` (with this ``payload``, when given)."""

        def matches(m: mqtt.MQTTMessage) -> bool:
            return m.topic == topic and (payload is None or m.payload == payload)

        with self._event:
            self._event.wait_for(lambda: any(matches(m) for m in self.messages), timeout)
        found = [m for m in self.messages if matches(m)]
        assert found, f"nothing on {topic} within {timeout} s; got {[m.topic for m in self.messages]}"
        return found[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect(target: Target) -> Iterator:
    made: list[Client] = []

    def make(username=None, password=None, **kw) -> Client:
        client = Client(target, username, password, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def service(target: Target) -> tuple[str, str]:
    return broker_logins.service_login(target.settings)


def login_accepted(target: Target, username: str, password: str, timeout: float = 5.0) -> bool:
    """Wait until the broker accepts a login (it re-reads the files after a change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = RawClient(target.host, target.port)
        try:
            _, rc = raw.connect(new_id("probe"), username=username, password=password)
        finally:
            raw.close()
        if rc == 0:
            return True
        time.sleep(0.1)
    return False


def as_device(raw: RawClient, agent, **kw) -> tuple[bool, int]:
    """CONNECT as the agent's device: its client id and the broker login POST /agents issued."""
    return raw.connect(agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], **kw)


def refused(target: Target, username: str | None, password: str | None) -> bool:
    raw = RawClient(target.host, target.port)
    try:
        _, rc = raw.connect(new_id("probe"), username=username, password=password)
    except ConnectionError:  # some brokers just close the connection
        return True
    finally:
        raw.close()
    return rc in REFUSED


# --- who may connect ---------------------------------------------------------------


def test_bad_logins_are_refused(target: Target, make_agent) -> None:
    agent = make_agent()
    assert login_accepted(target, agent.agent_id, agent.mqtt["password"])
    assert refused(target, agent.agent_id, agent.mqtt["password"] + "x")
    assert refused(target, "agt_nobody", agent.mqtt["password"])
    assert refused(target, None, None)
    assert refused(target, agent.username, "password-1")  # the REST password is not a broker login


def test_a_rotated_secret_replaces_the_old_one(target: Target, client, admin, make_agent) -> None:
    agent = make_agent()
    old = agent.mqtt["password"]
    assert login_accepted(target, agent.agent_id, old)
    response = client.post(f"/api/v1/agents/{agent.agent_id}/mqtt-credentials", headers=admin.headers)
    assert response.status_code == 201, response.json
    new = response.json["mqtt"]["password"]
    assert new != old
    assert login_accepted(target, agent.agent_id, new)
    assert refused(target, agent.agent_id, old)


def test_a_deactivated_agent_cannot_log_in(target: Target, client, admin, make_agent) -> None:
    agent = make_agent()
    assert login_accepted(target, agent.agent_id, agent.mqtt["password"])
    response = client.patch(f"/api/v1/agents/{agent.agent_id}", json={"active": False}, headers=admin.headers)
    assert response.status_code == 200
    wait_until(lambda: refused(target, agent.agent_id, agent.mqtt["password"]), 5, "login refused")


def test_dashboard_login_is_read_only_and_ends_with_logout(
    target: Target, client, admin, connect, make_agent
) -> None:
    dash = admin.mqtt
    assert dash["url"].startswith("ws://")
    assert login_accepted(target, dash["username"], dash["password"])
    board = connect(dash["username"], dash["password"], ws=True)
    assert board.ok
    assert board.subscribe("orders/#", "agents/#") == [1, 1]
    feed = connect(*service(target))
    feed.publish("orders/o_probe/status", b'{"probe": 1}')
    board.wait_for("orders/o_probe/status")
    # It writes nothing: its publish reaches no one (an agent's presence topic, say).
    agent = make_agent()
    watcher = connect(*service(target))
    watcher.subscribe("agents/+/presence")
    presence = f"agents/{agent.agent_id}/presence"
    board.publish(presence, b'{"state": "offline"}')
    board.publish("orders/new", b"{}")
    # Positive controls, published afterwards by logins that may write there: the broker routes
    # in order, so a forwarded forbidden message would have arrived before them.
    assert login_accepted(target, agent.agent_id, agent.mqtt["password"])
    device = connect(agent.agent_id, agent.mqtt["password"], client_id=agent.agent_id)
    device.publish(presence, b'{"state": "online"}')
    watcher.wait_for(presence, payload=b'{"state": "online"}')
    watcher.publish("orders/o_marker/status", b'{"marker": 1}')  # the service's one connection now
    board.wait_for("orders/o_marker/status")
    assert [(m.topic, m.payload) for m in watcher.messages] == [(presence, b'{"state": "online"}')]
    assert not any(m.topic == "orders/new" for m in board.messages)
    assert client.delete("/api/v1/auth/token", headers=admin.headers).status_code == 204
    wait_until(lambda: refused(target, dash["username"], dash["password"]), 5, "login refused after logout")


# --- what each login may read and write ---------------------------------------------------


def test_an_agent_reads_and_writes_only_its_own_topics(target: Target, connect, make_agent) -> None:
    one, two = make_agent(), make_agent()
    me = connect(one.agent_id, one.mqtt["password"], client_id=one.agent_id)
    assert me.ok
    granted = me.subscribe(f"agents/{one.agent_id}/#", f"agents/{two.agent_id}/#", "orders/#", "#")
    assert granted[0] == 1
    # Mosquitto grants every SUBSCRIBE and filters delivery; ours refuses (0x80) up front.
    if target.kind == "amqtt":
        assert granted[1:] == [0x80, 0x80, 0x80]
    feed = connect(*service(target))
    feed.publish(f"agents/{two.agent_id}/assigned", b'{"other": true}')
    feed.publish("orders/new", b'{"order": 1}')
    feed.publish(f"agents/{one.agent_id}/assigned", b'{"mine": true}')  # positive control
    me.wait_for(f"agents/{one.agent_id}/assigned")  # the forbidden ones were published first
    assert [m.topic for m in me.messages] == [f"agents/{one.agent_id}/assigned"]

    observer = connect(*service(target))  # the service reads every agent's presence
    observer.subscribe("agents/+/presence")
    me.publish("orders/new", b'{"forged": true}')
    me.publish(f"agents/{two.agent_id}/presence", b'{"state": "offline"}')
    me.publish(f"agents/{one.agent_id}/presence", b'{"state": "online"}')  # its own: allowed
    observer.wait_for(f"agents/{one.agent_id}/presence")  # published after the forbidden ones
    assert [m.topic for m in observer.messages] == [f"agents/{one.agent_id}/presence"]


def test_retained_messages_never_leak_across_agents(target: Target, connect, make_agent, admin) -> None:
    """A broad subscriber elsewhere must not make the broker replay others' retained state."""
    one, two = make_agent(), make_agent()
    board = connect(admin.mqtt["username"], admin.mqtt["password"])
    board.subscribe("agents/#", "orders/#")  # someone holding wide filters
    feed = connect(*service(target))
    feed.publish(f"agents/{two.agent_id}/assigned", b'{"agent": "two"}', retain=True)
    feed.publish(f"agents/{one.agent_id}/assigned", b'{"agent": "one"}', retain=True)
    me = connect(one.agent_id, one.mqtt["password"], client_id=one.agent_id)
    me.subscribe(f"agents/{one.agent_id}/#")
    me.wait_for(f"agents/{one.agent_id}/assigned")
    # Positive control: a live message published now comes after the whole retained replay,
    # so a leaked or duplicated retained message would have arrived before it.
    feed.publish(f"agents/{one.agent_id}/assigned", b'{"agent": "one", "live": true}')
    me.wait_for(f"agents/{one.agent_id}/assigned", payload=b'{"agent": "one", "live": true}')
    assert [(m.topic, m.retain, m.payload) for m in me.messages] == [
        (f"agents/{one.agent_id}/assigned", True, b'{"agent": "one"}'),
        (f"agents/{one.agent_id}/assigned", False, b'{"agent": "one", "live": true}'),
    ]


# --- delivery ----------------------------------------------------------------------------------


def test_an_offline_agent_gets_what_it_missed_in_order(
    target: Target, relays, client, admin, make_agent, place_order
) -> None:
    agent = make_agent()
    relays()
    raw = RawClient(target.host, target.port)
    assert raw.connect(
        agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], clean=False
    ) == (False, 0)
    assert raw.subscribe((f"agents/{agent.agent_id}/assigned", 1)) == [1]
    first = raw.read_publish(5)  # the retained (empty) worklist
    raw.puback(first.packet_id)
    seen = json.loads(first.payload)["version"]
    raw.disconnect()
    raw.close()

    def assign_one() -> int:
        order = place_order()
        walk_to(client, admin, order["id"], "confirmed")
        assert assign(client, admin, order["id"], agent.agent_id).status_code == 200
        with db.connection_context():
            return Agent.get_by_id(agent.agent_id).worklist_version

    for _ in range(3):  # assignments while the device is off
        final = assign_one()
    wait_until(all_published, 10, "the relay publishing the assignments")  # the broker has them

    raw = RawClient(target.host, target.port)
    present, rc = raw.connect(
        agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], clean=False
    )
    assert (present, rc) == (True, 0)
    versions: list[int] = []

    def read_until(version: int) -> None:
        while version not in versions:
            message = raw.read_publish(10)
            versions.append(json.loads(message.payload)["version"])
            raw.puback(message.packet_id)

    read_until(final)
    # Positive control: a live assignment now comes after whatever the session still held.
    live = assign_one()
    read_until(live)
    raw.disconnect()
    raw.close()
    # Every version published while it was away, in order (an older one may come first: the relay
    # republishes the current state when it connects, possibly unacked then). Delivery is at least
    # once: a relay that reconnects on a busy machine republishes the newest state again.
    newer = [v for v in versions if v > seen]
    assert newer == sorted(newer), (seen, versions)
    assert sorted(set(newer)) == list(range(seen + 1, live + 1)), (seen, versions)
    assert final == seen + 3 and live == final + 1


def test_an_unacknowledged_message_is_redelivered_with_dup(target: Target, connect, make_agent) -> None:
    agent = make_agent()
    raw = RawClient(target.host, target.port)
    as_device(raw, agent, clean=False)
    raw.subscribe((f"agents/{agent.agent_id}/assigned", 1))
    feed = connect(*service(target))
    feed.publish(f"agents/{agent.agent_id}/assigned", b'{"n": 1}')
    first = raw.read_publish(5)
    assert not first.dup
    raw.close()  # dropped before PUBACK

    raw = RawClient(target.host, target.port)
    assert raw.connect(
        agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], clean=False
    ) == (True, 0)
    again = raw.read_publish(5)
    raw.close()
    assert again.dup and again.payload == b'{"n": 1}'


def test_a_vanished_agent_goes_offline_by_keepalive(target: Target, connect, make_agent) -> None:
    agent = make_agent()
    watcher = connect(*service(target))
    watcher.subscribe(f"agents/{agent.agent_id}/presence")
    raw = RawClient(target.host, target.port)
    will = (f"agents/{agent.agent_id}/presence", b'{"state": "offline"}', 1, True)
    assert (
        raw.connect(
            agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], keepalive=2, will=will
        )[1]
        == 0
    )
    started = time.monotonic()
    # Silent from now on: no PINGREQ, no FIN (the socket stays open until the end). Expiry is due
    # at 1.5 x 2 s; the margin is for a busy machine (a test run in parallel with others).
    message = watcher.wait_for(f"agents/{agent.agent_id}/presence", timeout=1.5 * 2 + 7)
    waited = time.monotonic() - started
    raw.close()
    assert message.payload == b'{"state": "offline"}'
    assert 2 <= waited <= 1.5 * 2 + 7, waited


def test_a_burst_of_500_agent_logins_does_not_stall_delivery(target: Target, connect) -> None:
    with db.connection_context():
        ids = [new_id("agt") for _ in range(501)]
        Agent.insert_many([{"id": i, "name": i} for i in ids]).execute()
        secrets = {i: broker_logins.issue_agent(Agent.get_by_id(i)) for i in ids}
    # The stream's own agent is not in the burst: a login with its client id would take its
    # session over and end the stream (which then showed no gap at all).
    streamer, ids = ids[0], ids[1:]
    broker_logins.sync_files(target.settings)
    assert login_accepted(target, ids[-1], secrets[ids[-1]])

    watcher = connect(*service(target))
    watcher.subscribe("agents/+/presence")
    feed = connect(streamer, secrets[streamer], client_id=streamer)
    stop = threading.Event()

    def tick() -> None:
        n = 0
        while not stop.is_set():
            feed.client.publish(f"agents/{streamer}/presence", json.dumps({"n": n}), qos=1)
            n += 1
            time.sleep(0.02)  # the stream's pace: a message every 20 ms

    def login(agent_id: str) -> int:
        raw = RawClient(target.host, target.port, timeout=30)
        try:
            return raw.connect(agent_id, username=agent_id, password=secrets[agent_id])[1]
        finally:
            raw.close()

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        wait_until(lambda: len(watcher.messages) >= 5, 10, "the stream flowing before the burst")
        started = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(login, ids))
        burst = time.monotonic() - started
        after = len(watcher.messages)
        wait_until(lambda: len(watcher.messages) >= after + 5, 10, "the stream flowing after the burst")
    finally:
        stop.set()
        ticker.join()
    arrivals = [m.timestamp for m in watcher.messages]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    print(f"\n{target.kind}: 500 logins in {burst:.2f} s; longest delivery gap {max(gaps) * 1000:.0f} ms")
    assert codes == [0] * 500
    # A stall check, not a speed target: Mosquitto ~25 ms; ours 130-600 ms before its fast paths.
    assert max(gaps) < 1.5, max(gaps)


def test_the_relay_restores_deleted_login_files(target: Target, relays) -> None:
    """Files lost (a wiped data volume, say) are rewritten from the database by the relay."""
    target.settings.mqtt_password_path.unlink()
    target.settings.mqtt_acl_path.unlink()
    relays()  # connects only if its own login is back in the files the broker reads
    assert target.settings.mqtt_password_path.exists() and target.settings.mqtt_acl_path.exists()
    assert login_accepted(target, *service(target))
