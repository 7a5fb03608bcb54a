"""MQTT 3.1.1 behaviour the hardened embedded broker guarantees (broker/hardened.py).

Each test names the rule it checks; each failed on stock amqtt 0.12.1. Real broker on
ephemeral ports, real paho clients, and a raw-socket client (tests/mqtt_raw.py) where
paho hides a flag or acknowledges on its own. Absence is asserted with a marker: the
broker routes messages in order, so anything that would have come arrives before a
marker published afterwards.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from broker import hardened
from broker.plugins import plugin_config
from broker.server import EmbeddedBroker
from tests.mqtt_raw import RawClient

HOST = "127.0.0.1"
TIMEOUT = 5.0
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{time.monotonic_ns() % 100000}"


class Device:
    """A paho client (VERSION2) whose CONNACKs, SUBACKs and messages land on queues."""

    def __init__(self, port: int, client_id: str | None = None, *, clean: bool = True) -> None:
        self.port = port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connacks: queue.Queue[tuple[bool, mqtt.ReasonCode]] = queue.Queue()
        self._subacks: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self._acks: queue.Queue[int] = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or _id("dev"), clean_session=clean
        )
        self.paho.on_connect = lambda _c, _u, flags, rc, _p: self._connacks.put((flags.session_present, rc))
        self.paho.on_subscribe = lambda _c, _u, _mid, codes, _p: self._subacks.put(codes)
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)
        self.paho.on_publish = lambda _c, _u, mid, _rc, _p: self._acks.put(mid)

    def connect(self) -> bool:
        """Connect; return CONNACK's session-present flag."""
        self.paho.connect(HOST, self.port, keepalive=30)
        self.paho.loop_start()
        session_present, reason = self._connacks.get(timeout=TIMEOUT)
        assert not reason.is_failure, reason
        return bool(session_present)

    def subscribe(self, *filters: str, qos: int = 1) -> None:
        self.paho.subscribe([(f, qos) for f in filters])
        codes = self._subacks.get(timeout=TIMEOUT)
        assert all(not code.is_failure for code in codes), codes

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; return once sent (QoS 0) or acknowledged by the broker (QoS 1)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + TIMEOUT
        # on_publish reports QoS 0 messages too (when written): skip earlier message ids.
        while self._acks.get(timeout=max(0.01, deadline - time.monotonic())) != info.mid:
            pass

    def until(self, marker_topic: str, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        """Every message received before the one on ``marker_topic`` (which must come)."""
        seen: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.topic == marker_topic:
                return seen
            seen.append(message)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def make_broker() -> Iterator[Callable[..., EmbeddedBroker]]:
    made: list[EmbeddedBroker] = []

    def make(**kwargs: Any) -> EmbeddedBroker:
        instance = EmbeddedBroker(**kwargs)
        instance.start()
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()


@pytest.fixture
def devices() -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(port: int, client_id: str | None = None, *, clean: bool = True) -> Device:
        made.append(Device(port, client_id, clean=clean))
        return made[-1]

    yield make
    for device in made:
        device.close()


def _mark(publisher: Device, topic: str = "probe/marker") -> str:
    publisher.publish(topic, b"marker", qos=1)
    return topic


# -- plugins used by the tests (loaded by amqtt from their dotted path) ----------------------


class NosyMayNotReadSecrets(BaseTopicPlugin):
    """Clients whose id starts with "nosy" may subscribe to anything but receive no secret/#."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        nosy = session is not None and (session.client_id or "").startswith("nosy")
        return not (nosy and action == Action.RECEIVE and (topic or "").startswith("secret/"))


class EveryoneByName(BaseAuthPlugin):
    """Accepts every client without marking it anonymous (stock amqtt queued only for those)."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


class PasswordIsOpenSesame(BaseAuthPlugin):
    async def authenticate(self, *, session: Session) -> bool:
        return session.password == "open-sesame"


class DollarTopics(BasePlugin):
    """Retains a $SYS topic at start and broadcasts one when someone subscribes to probe/dollar."""

    async def on_broker_post_start(self) -> None:
        await self.context.retain_message("$SYS/broker/uptime", b"1", 1)

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        if topic == "probe/dollar":
            await self.context.broadcast_message("$SYS/broker/live", b"live", 1)


def _with(*plugins: type) -> dict[str, dict[str, Any]]:
    return {**plugin_config(anonymous=True), **{f"{__name__}.{p.__name__}": {} for p in plugins}}


# -- 1. retained delivery --------------------------------------------------------------------


def test_connect_replays_no_retained_message_for_other_clients_filters(broker, devices) -> None:
    """Retained messages go only to a client that SUBSCRIBEs, and only for its filter.

    Stock amqtt replayed, on CONNECT, the retained messages matching every filter any
    client held: a client subscribed to agents/a-1/# got orders it never asked for.
    """
    admin = devices(broker.port)
    admin.connect()
    admin.subscribe("#")
    admin.publish("orders/o-1/status", b"v1", retain=True)

    agent = devices(broker.port)
    agent.connect()
    agent.subscribe("agents/a-1/#")
    before_marker = agent.until(_mark(admin, "agents/a-1/marker"))
    assert [m.topic for m in before_marker] == []


def test_wildcard_subscriber_gets_each_retained_message_once_per_subscribe(broker, devices) -> None:
    """A later SUBSCRIBE to a wildcard gets each matching retained message exactly once.

    Stock amqtt sent them twice when another client already held the same filter
    (once replayed on CONNECT, once for the SUBSCRIBE).
    """
    publisher = devices(broker.port)
    publisher.connect()
    publisher.subscribe("orders/+/status")  # another client holding the same filter
    for n in range(3):
        publisher.publish(f"orders/o-{n}/status", b"v%d" % n, retain=True)

    late = devices(broker.port)
    late.connect()
    late.subscribe("orders/+/status", "probe/marker")
    first = late.until(_mark(publisher))
    assert sorted(m.topic for m in first) == [f"orders/o-{n}/status" for n in range(3)]
    assert all(m.retain for m in first)

    late.subscribe("orders/+/status")  # a new SUBSCRIBE re-sends the retained set, once
    again = late.until(_mark(publisher))
    assert sorted(m.topic for m in again) == [f"orders/o-{n}/status" for n in range(3)]


def test_overlapping_filters_in_one_subscribe_get_a_retained_message_at_most_once_each(
    broker, devices
) -> None:
    """A retained topic matched by two filters of one SUBSCRIBE arrives at most once per filter."""
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("orders/o-1/status", b"v1", retain=True)

    client = devices(broker.port)
    client.connect()
    client.subscribe("orders/#", "orders/+/status", "probe/marker")
    received = client.until(_mark(publisher))
    assert 1 <= len(received) <= 2
    assert {m.topic for m in received} == {"orders/o-1/status"}


def test_retained_delivery_passes_the_receive_check(make_broker, devices) -> None:
    """A retained message goes through the same "receive" topic check as a live one."""
    broker = make_broker(plugins=_with(NosyMayNotReadSecrets))
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("secret/plans", b"retained secret", retain=True)
    publisher.publish("public/news", b"retained news", retain=True)

    nosy = devices(broker.port, "nosy-1")
    nosy.connect()
    nosy.subscribe("#")
    publisher.publish("secret/plans", b"live secret")
    received = nosy.until(_mark(publisher))
    assert [(m.topic, m.payload) for m in received] == [("public/news", b"retained news")]


# -- 2. persistent sessions ------------------------------------------------------------------


def test_offline_messages_are_queued_for_an_anonymous_persistent_session(broker, devices) -> None:
    """Clean session off: subscriptions and QoS 1 messages published while away are kept
    and delivered in order on reconnect, with session present set; anonymous included."""
    device_id = _id("agent")
    device = devices(broker.port, device_id, clean=False)
    assert device.connect() is False
    device.subscribe("agents/a-1/#")
    device.close()

    publisher = devices(broker.port)
    publisher.connect()
    for n in range(5):
        publisher.publish("agents/a-1/assigned", b"%d" % n)

    back = devices(broker.port, device_id, clean=False)
    assert back.connect() is True  # session present; no SUBSCRIBE sent this time
    received = back.until(_mark(publisher, "agents/a-1/marker"))
    assert [m.payload for m in received] == [b"0", b"1", b"2", b"3", b"4"]


def test_clean_session_discards_the_old_session(broker, devices) -> None:
    """Clean session on: the old session's subscriptions and queued messages are gone."""
    device_id = _id("agent")
    device = devices(broker.port, device_id, clean=False)
    device.connect()
    device.subscribe("agents/a-1/#")
    device.close()
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("agents/a-1/assigned", b"queued")

    clean = devices(broker.port, device_id, clean=True)
    assert clean.connect() is False
    clean.subscribe("probe/marker")
    assert clean.until(_mark(publisher)) == []
    clean.close()

    persistent = devices(broker.port, device_id, clean=False)
    assert persistent.connect() is False  # nothing survived the clean session
    persistent.subscribe("probe/marker")
    publisher.publish("agents/a-1/assigned", b"not subscribed any more")
    assert persistent.until(_mark(publisher)) == []


# -- 3. redelivery ---------------------------------------------------------------------------


def _raw_persistent_subscriber(broker: EmbeddedBroker, client_id: str) -> RawClient:
    raw = RawClient(HOST, broker.port)
    assert raw.connect(client_id, clean=False) == (False, 0)
    assert raw.subscribe(("agents/a-1/#", 1)) == [1]
    return raw


def test_unacknowledged_qos1_message_is_redelivered_with_dup_after_reconnect(broker, devices) -> None:
    """A QoS 1 message sent but not acknowledged when the client drops comes again, DUP=1,
    same packet id, when it reconnects with clean session off [MQTT-4.4.0-1]."""
    client_id = _id("raw")
    raw = _raw_persistent_subscriber(broker, client_id)
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("agents/a-1/assigned", b"w1")
    first = raw.read_publish()
    assert (first.payload, first.qos, first.dup) == (b"w1", 1, False)
    raw.close()  # no PUBACK

    again = RawClient(HOST, broker.port)
    try:
        assert again.connect(client_id, clean=False) == (True, 0)
        redelivered = again.read_publish()
        assert (redelivered.payload, redelivered.qos, redelivered.dup) == (b"w1", 1, True)
        assert redelivered.packet_id == first.packet_id
        again.puback(redelivered.packet_id)
    finally:
        again.close()


def test_slow_puback_keeps_the_message_in_flight(broker, devices) -> None:
    """A PUBACK slower than amqtt's 5 s does not drop the message: it stays in flight
    until acknowledged, so a reconnect still redelivers it."""
    client_id = _id("raw")
    raw = _raw_persistent_subscriber(broker, client_id)
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("agents/a-1/assigned", b"slow")
    assert raw.read_publish().payload == b"slow"
    time.sleep(5.5)  # past amqtt's hard-coded 5 s PUBACK timeout, which dropped the message
    raw.close()

    again = RawClient(HOST, broker.port)
    try:
        assert again.connect(client_id, clean=False) == (True, 0)
        redelivered = again.read_publish()
        assert (redelivered.payload, redelivered.dup) == (b"slow", True)
    finally:
        again.close()


# -- 4. keep-alive and last will -------------------------------------------------------------


def test_keepalive_expiry_closes_the_connection_and_publishes_the_will(broker, devices) -> None:
    """No packet for 1.5 x keep-alive: the broker closes the connection and sends the will."""
    watcher = devices(broker.port)
    watcher.connect()
    watcher.subscribe("agents/+/presence")
    silent = RawClient(HOST, broker.port)
    try:
        will = ("agents/a-9/presence", b"offline", 1, False)
        started = time.monotonic()
        assert silent.connect(_id("silent"), keepalive=1, will=will) == (False, 0)
        assert silent.wait_closed(timeout=4.0), "broker kept a silent client past its keep-alive"
        elapsed = time.monotonic() - started
        message = watcher.messages.get(timeout=TIMEOUT)
        assert (message.topic, message.payload) == ("agents/a-9/presence", b"offline")
        assert elapsed >= 1.4  # not before 1.5 x keep-alive
    finally:
        silent.close()


def test_will_fires_on_abrupt_close_but_not_after_disconnect(broker, devices) -> None:
    """The will goes out when the TCP connection just ends, never after a DISCONNECT."""
    watcher = devices(broker.port)
    watcher.connect()
    watcher.subscribe("agents/+/presence")
    polite = RawClient(HOST, broker.port)
    polite.connect(_id("polite"), will=("agents/a-1/presence", b"polite", 1, False))
    polite.disconnect()
    # The broker decides about the will before it closes the socket.
    assert polite.wait_closed(TIMEOUT)
    polite.close()
    assert watcher.until(_mark(watcher, "agents/marker/presence")) == []

    abrupt = RawClient(HOST, broker.port)
    abrupt.connect(_id("abrupt"), will=("agents/a-2/presence", b"abrupt", 1, False))
    abrupt.close()
    message = watcher.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload) == ("agents/a-2/presence", b"abrupt")


# -- 5. $-topics -----------------------------------------------------------------------------


def test_wildcards_at_the_first_level_do_not_match_dollar_topics(make_broker, devices) -> None:
    """# and +/... never match a topic starting with $ [MQTT-4.7.2-1]; $SYS/# does."""
    broker = make_broker(plugins=_with(DollarTopics))
    everything = devices(broker.port)
    everything.connect()
    everything.subscribe("#", "+/broker/uptime", "+/broker/live")
    dollar = devices(broker.port)
    dollar.connect()
    dollar.subscribe("$SYS/#")
    retained = dollar.messages.get(timeout=TIMEOUT)
    assert (retained.topic, retained.retain) == ("$SYS/broker/uptime", True)

    trigger = devices(broker.port)
    trigger.connect()
    trigger.subscribe("probe/dollar")
    live = dollar.messages.get(timeout=TIMEOUT)
    assert live.topic == "$SYS/broker/live"  # routed by now, so "everything" got it if it matched
    assert everything.until(_mark(trigger)) == []


def test_a_client_publishing_to_a_dollar_topic_is_disconnected(broker) -> None:
    """$-topics are the broker's [MQTT-4.7.2-1]: a client publishing to one is cut off
    (stock amqtt stopped serving it but kept the connection open)."""
    client = RawClient(HOST, broker.port)
    try:
        assert client.connect(_id("rogue")) == (False, 0)
        client.publish("$SYS/broker/uptime", b"forged")
        assert client.wait_closed(TIMEOUT)
    finally:
        client.close()


# -- 6. bounded queues -----------------------------------------------------------------------


def _offline_agent(broker: EmbeddedBroker, devices) -> tuple[str, Device]:
    """An agent device with a persistent session on agents/a-1/#, now offline, and a
    connected publisher."""
    device_id = _id("agent")
    device = devices(broker.port, device_id, clean=False)
    device.connect()
    device.subscribe("agents/a-1/#")
    device.close()
    publisher = devices(broker.port)
    publisher.connect()
    return device_id, publisher


def test_offline_queue_is_bounded_and_drops_the_oldest(make_broker, devices, caplog) -> None:
    """Past max_queued_messages the oldest queued messages are dropped, counted, and one
    warning names the client; the newest arrive in order."""
    broker = make_broker(max_queued_messages=5, plugins={f"{__name__}.EveryoneByName": {}})
    device_id, publisher = _offline_agent(broker, devices)
    with caplog.at_level(logging.WARNING, logger="broker.hardened"):
        for n in range(8):
            publisher.publish("agents/a-1/assigned", b"%d" % n)
        back = devices(broker.port, device_id, clean=False)
        back.connect()
        received = back.until(_mark(publisher, "agents/a-1/marker"))
    assert [m.payload for m in received] == [b"3", b"4", b"5", b"6", b"7"]
    assert broker.dropped_messages == 3
    warnings = [r for r in caplog.records if r.name == "broker.hardened" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and device_id in warnings[0].getMessage()


def test_offline_queue_is_bounded_by_payload_bytes(make_broker, devices) -> None:
    """Past max_queued_bytes (mosquitto.conf's max_queued_bytes) the oldest queued messages
    are dropped however few they are; the newest that fit arrive in order."""
    broker = make_broker(max_queued_bytes=306, plugins={f"{__name__}.EveryoneByName": {}})
    device_id, publisher = _offline_agent(broker, devices)
    for n in range(8):  # 100 bytes each: three fit, with the 6-byte marker behind them
        publisher.publish("agents/a-1/assigned", b"%d" % n * 100)
    back = devices(broker.port, device_id, clean=False)
    back.connect()
    received = back.until(_mark(publisher, "agents/a-1/marker"))
    assert [m.payload[:1] for m in received] == [b"5", b"6", b"7"]
    assert broker.dropped_messages == 5


def test_live_messages_queued_behind_a_retained_replay_are_not_dropped(make_broker, devices) -> None:
    """A client subscribing while retained state changes gets the replay of what was
    stored, then the changes live, queued behind the replay: those must not fall to the
    queue limit (they did, and the client kept old states while the broker held new ones)."""
    broker = make_broker(
        max_queued_messages=5, max_inflight_messages=1, plugins={f"{__name__}.EveryoneByName": {}}
    )
    publisher = devices(broker.port)
    publisher.connect()
    observer = devices(broker.port)
    observer.connect()
    observer.subscribe("probe/#")
    for n in range(20):
        publisher.publish(f"orders/o-{n}/status", b"v1", retain=True)
    dashboard = RawClient(HOST, broker.port)
    try:
        dashboard.connect(_id("dash"))
        assert dashboard.subscribe(("orders/+/status", 1)) == [1]
        first = dashboard.read_publish()  # the window (1) is full until this is acknowledged
        for n in range(10):
            publisher.publish(f"orders/o-{n}/status", b"v2", retain=True)
        # Routed in order: once the marker is routed, the v2s are in the dashboard's queue,
        # behind 19 replayed messages.
        assert observer.until(_mark(publisher)) == []
        latest = {first.topic: first.payload}
        dashboard.puback(first.packet_id)
        for _ in range(19 + 10):
            message = dashboard.read_publish()
            latest[message.topic] = message.payload
            dashboard.puback(message.packet_id)
    finally:
        dashboard.close()
    assert latest == {f"orders/o-{n}/status": b"v2" if n < 10 else b"v1" for n in range(20)}
    assert broker.dropped_messages == 0


def test_queue_overflow_drops_oldest_qos0_first_then_oldest() -> None:
    """The overflow policy, on the queue itself: QoS 0 goes first, then the oldest."""
    box = hardened.Outbox()
    for n, qos in enumerate([1, 0, 1, 0]):
        assert box.push(hardened.Queued(f"t/{n}", b"", qos, False), limit=4) == 0
    assert box.push(hardened.Queued("t/4", b"", 1, False), limit=4) == 1  # drops t/1 (QoS 0)
    assert box.push(hardened.Queued("t/5", b"", 0, False), limit=4) == 1  # drops t/3 (QoS 0)
    assert box.push(hardened.Queued("t/6", b"", 1, False), limit=4) == 1  # drops t/5 (QoS 0)
    assert box.push(hardened.Queued("t/7", b"", 1, False), limit=4) == 1  # no QoS 0: drops t/0
    assert box.push(hardened.Queued("t/8", b"", 0, False), limit=4) == 1  # the new QoS 0 itself
    retained = hardened.Queued("r/1", b"", 1, True)
    assert box.push(retained, limit=4, exempt=True) == 0  # SUBSCRIBE answers are not cut short
    assert [box.pop().topic for _ in range(len(box))] == ["t/2", "t/4", "t/6", "t/7", "r/1"]
    assert box.dropped == 5


def test_queue_is_bounded_by_payload_bytes_too() -> None:
    """max_queued_bytes, as mosquitto.conf's: past the size, the oldest go (QoS 0 first)
    however few messages wait; a message larger than the limit on its own still queues,
    alone; a replay's messages are not counted; popping gives the bytes back."""
    box = hardened.Outbox()

    def push(topic: str, size: int, qos: int = 1, exempt: bool = False) -> int:
        item = hardened.Queued(topic, b"x" * size, qos, exempt)
        return box.push(item, limit=100, limit_bytes=100, exempt=exempt)

    assert push("t/0", 40, qos=0) == 0
    assert push("t/1", 40) == 0
    assert box.queued_bytes == 80
    assert push("t/2", 40) == 1  # 120 > 100 bytes, 3 messages: t/0 goes (QoS 0 first)
    assert box.queued_bytes == 80
    assert push("r/1", 500, exempt=True) == 0  # a replay's message is not counted
    assert box.queued_bytes == 80
    assert push("big", 300) == 2  # larger than the limit alone: every older one goes
    assert box.queued_bytes == 300
    assert [box.pop().topic for _ in range(len(box))] == ["r/1", "big"]
    assert box.queued_bytes == 0 and box.dropped == 3


def test_a_burst_of_the_whole_retained_state_reaches_a_slow_dashboard(make_broker, devices) -> None:
    """A dashboard that subscribes just before the relay republishes every order (a broker
    restart) gets them live, not as a retained replay; with the default limits a burst of
    10,000, ten times the old queue limit of 1,000, arrives whole behind a full window."""
    broker = make_broker(plugins={f"{__name__}.EveryoneByName": {}})
    dashboard = RawClient(HOST, broker.port)
    try:
        dashboard.connect(_id("dash"))
        assert dashboard.subscribe(("orders/+/status", 1)) == [1]  # nothing retained yet
        publisher = devices(broker.port)
        publisher.connect()
        burst = 10_000
        for n in range(burst):  # not waiting for each PUBACK: a relay streams its republish
            assert publisher.paho.publish(f"orders/o-{n}/status", b"%d" % n, qos=1, retain=True).rc == 0
        publisher.publish("orders/last/status", b"end", retain=True)  # acknowledged: all routed
        seen = set()
        while True:  # only now does the dashboard read: 100 in flight, the rest queued
            message = dashboard.read_publish()
            dashboard.puback(message.packet_id)
            if message.topic == "orders/last/status":
                break  # the newest: dropping the oldest would never take it
            seen.add(message.topic)
    finally:
        dashboard.close()
    assert len(seen) == burst
    assert broker.dropped_messages == 0


def test_a_client_that_stops_acknowledging_is_bounded_and_stalls_no_one(make_broker, devices) -> None:
    """A connected client that stops sending PUBACKs gets max_inflight_messages in flight
    and max_queued_messages queued (oldest dropped); everyone else gets every message,
    and once it acknowledges, the newest queued ones follow in order."""
    broker = make_broker(max_queued_messages=10, max_inflight_messages=20)
    stuck = RawClient(HOST, broker.port)
    try:
        assert stuck.connect(_id("stuck")) == (False, 0)
        assert stuck.subscribe(("bulk/#", 1)) == [1]
        reader = devices(broker.port)
        reader.connect()
        reader.subscribe("bulk/#")
        publisher = devices(broker.port)
        publisher.connect()
        for n in range(40):
            publisher.publish("bulk/n", b"%d" % n)
            # One at a time, so that the reader keeps up however busy the machine is (a burst
            # of 40 once overran a slow reader's 20 in flight and 10 queued on a busy CI host).
            assert reader.messages.get(timeout=TIMEOUT).payload == b"%d" % n

        in_flight = [stuck.read_publish() for _ in range(20)]
        assert [p.payload for p in in_flight] == [b"%d" % n for n in range(20)]
        deadline = time.monotonic() + TIMEOUT
        while broker.dropped_messages < 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # routing to "stuck" may trail the reader's copy by a moment
        assert broker.dropped_messages == 10
        for publish in in_flight:
            assert publish.packet_id is not None
            stuck.puback(publish.packet_id)
        assert [stuck.read_publish().payload for _ in range(10)] == [b"%d" % n for n in range(30, 40)]
    finally:
        stuck.close()


def test_qos2_messages_complete_their_flow_both_ways(broker, devices) -> None:
    """QoS 2 in and out: the publisher's flow completes and the subscriber gets it once."""
    subscriber = devices(broker.port)
    subscriber.connect()
    subscriber.subscribe("t/#", qos=2)
    publisher = devices(broker.port)
    publisher.connect()
    for n in range(3):
        publisher.publish("t/qos2", b"%d" % n, qos=2)  # returns after PUBCOMP
    publisher.publish("t/marker", b"", qos=2)  # paho shows a QoS 2 message only at PUBREL
    received = subscriber.until("t/marker")
    assert [(m.payload, m.qos) for m in received] == [(b"0", 2), (b"1", 2), (b"2", 2)]


# -- 7. flags and QoS on forwarded messages --------------------------------------------------


def test_queued_messages_have_retain_0(make_broker, devices) -> None:
    """A message queued for an absent client arrives with retain=0 [MQTT-3.3.1-9], even
    if published retained; only a SUBSCRIBE's retained answer has retain=1."""
    broker = make_broker(plugins={f"{__name__}.EveryoneByName": {}})
    device_id = _id("agent")
    device = devices(broker.port, device_id, clean=False)
    device.connect()
    device.subscribe("agents/a-1/#")
    device.close()
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("agents/a-1/assigned", b"queued", retain=True)

    back = devices(broker.port, device_id, clean=False)
    back.connect()
    received = back.until(_mark(publisher, "agents/a-1/marker"))
    assert [(m.topic, m.payload, m.qos, bool(m.retain)) for m in received] == [
        ("agents/a-1/assigned", b"queued", 1, False)
    ]
    back.subscribe("agents/a-1/assigned")
    answer = back.messages.get(timeout=TIMEOUT)
    assert (answer.topic, answer.payload, answer.retain) == ("agents/a-1/assigned", b"queued", True)


def test_delivered_qos_is_the_lower_of_publish_and_subscription(broker, devices) -> None:
    """Delivered QoS = min(publish QoS, subscription QoS) [MQTT-3.8.4-6]; amqtt upgraded
    QoS 0 publishes to the subscription's QoS."""
    subscriber = devices(broker.port)
    subscriber.connect()
    subscriber.subscribe("t/qos1/#", qos=1)
    subscriber.subscribe("t/qos0/#", qos=0)
    publisher = devices(broker.port)
    publisher.connect()
    publisher.publish("t/qos1/a", b"0 into 1", qos=0)
    publisher.publish("t/qos0/a", b"1 into 0", qos=1)
    publisher.publish("t/qos1/b", b"1 into 1", qos=1)
    received = subscriber.until(_mark(publisher, "t/qos1/marker"))
    assert [(m.payload, m.qos, bool(m.retain)) for m in received] == [
        (b"0 into 1", 0, False),
        (b"1 into 0", 0, False),
        (b"1 into 1", 1, False),
    ]


# -- takeover and authentication order -------------------------------------------------------


def test_reconnect_with_same_id_takes_over_and_keeps_receiving(broker, devices) -> None:
    """A device reconnecting while its old connection still looks alive takes over the
    session and receives live messages on the new connection [MQTT-3.1.4-2]."""
    device_id = _id("agent")
    stale = RawClient(HOST, broker.port)
    try:
        assert stale.connect(device_id, clean=False) == (False, 0)
        assert stale.subscribe(("agents/a-1/#", 1)) == [1]
        fresh = devices(broker.port, device_id, clean=False)
        assert fresh.connect() is True
        assert stale.wait_closed(TIMEOUT)
        publisher = devices(broker.port)
        publisher.connect()
        publisher.publish("agents/a-1/assigned", b"after takeover")
        message = fresh.messages.get(timeout=TIMEOUT)
        assert message.payload == b"after takeover"
    finally:
        stale.close()


def test_refused_login_leaves_the_existing_session_alone(make_broker, devices) -> None:
    """A CONNECT whose credentials are refused can neither kick the connected client with
    that id nor discard its session."""
    broker = make_broker(plugins={f"{__name__}.PasswordIsOpenSesame": {}})
    device_id = _id("agent")
    device = devices(broker.port, device_id, clean=False)
    device.paho.username_pw_set("agent", "open-sesame")
    device.connect()
    device.subscribe("agents/a-1/#")

    intruder = RawClient(HOST, broker.port)
    try:
        assert intruder.connect(device_id, clean=True, username="agent", password="guess") == (False, 5)
    finally:
        intruder.close()
    publisher = devices(broker.port)
    publisher.paho.username_pw_set("service", "open-sesame")
    publisher.connect()
    publisher.publish("agents/a-1/assigned", b"still here")
    message = device.messages.get(timeout=TIMEOUT)
    assert message.payload == b"still here"


# -- 9. version guard ------------------------------------------------------------------------


def test_version_guard_refuses_any_other_amqtt_version() -> None:
    """The overrides depend on amqtt internals: another version fails loudly at import."""
    hardened.check_amqtt_version("0.12.1")
    with pytest.raises(ImportError, match=r"0\.12\.1.*0\.13\.0|0\.13\.0.*0\.12\.1"):
        hardened.check_amqtt_version("0.13.0")


# -- 7. acknowledged means routed --------------------------------------------------------


@pytest.mark.parametrize("leave", ["disconnect", "close"])
def test_messages_acknowledged_before_the_publisher_leaves_are_all_delivered(broker, devices, leave) -> None:
    """Every QoS 1 message the broker PUBACKed is routed, even if its publisher leaves (DISCONNECT
    or a dropped socket) right after the last PUBACK, while messages still wait to be routed."""
    watcher = devices(broker.port)
    watcher.connect()
    watcher.subscribe("burst/#")
    count = 500
    publisher = RawClient(HOST, broker.port)
    publisher.connect(_id("burst"))
    for n in range(1, count + 1):
        publisher.publish(f"burst/{n}", b"x" * 200, qos=1, packet_id=n)
    acked = {publisher.read_packet()[0] for _ in range(count)}
    assert acked == {4}  # PUBACK, for every one of them
    getattr(publisher, leave)()
    publisher.close()
    got = []
    while len(got) < count:
        got.append(watcher.messages.get(timeout=TIMEOUT).topic)
    assert got == [f"burst/{n}" for n in range(1, count + 1)]
