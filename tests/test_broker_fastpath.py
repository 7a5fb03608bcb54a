"""The broker's fast paths give the answers of the slow ones they replaced.

PUBLISH encoded once per message (broker.wire), topic filters as compiled patterns,
ACL answers remembered per rule set, WebSocket sends batched and uncompressed, and the
reader loop that handles PUBACK, PINGREQ and QoS 0/1 PUBLISH itself: real brokers and
real paho clients where a connection is involved.
"""

from __future__ import annotations

import queue
import socket
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from amqtt.broker import Broker
from amqtt.mqtt.publish import PublishPacket
from websockets.sync.client import connect as ws_connect

from broker.credfiles import READ, Acl, topic_matches
from broker.hardened import HardenedBroker
from broker.server import BrokerStopped, EmbeddedBroker
from broker.wire import Publication
from tests.mqtt_fixtures import broker  # noqa: F401 - the fixture
from tests.mqtt_raw import RawClient

HOST = "127.0.0.1"
TIMEOUT = 10.0
FILTERS = ["#", "+", "a/#", "a/+", "+/+", "a/+/c", "a/b", "+/b/#", "$SYS/#", "a//b", "a/+/#", "/#", "+/#"]
TOPICS = ["a", "a/b", "a/b/c", "$SYS/x", "b", "a//b", "/x", "a/", "x/b/c", "orders/1/status"]


@pytest.mark.parametrize("topic", ["a/b", "ü/x", "orders/o-1/status"])
@pytest.mark.parametrize("size", [0, 600, 200_000])
def test_publication_encodes_what_amqtt_encodes(topic: str, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    publication = Publication(topic, data)
    for qos in (0, 1, 2):
        for retain in (False, True):
            for dup in (False, True) if qos else (False,):
                packet_id = 0x1234 if qos else None
                expected = PublishPacket.build(topic, data, packet_id, dup, qos, retain).to_bytes()
                assert bytes(publication.packet(qos, retain, packet_id, dup=dup)) == expected


def test_each_copy_gets_its_own_packet_id() -> None:
    publication = Publication("t", b"payload")
    first, second = publication.packet(1, False, 1), publication.packet(1, False, 2)
    assert first[-9:-7] == b"\x00\x01" and second[-9:-7] == b"\x00\x02"


def test_filter_matching_agrees_with_amqtt() -> None:
    class Quiet:
        import logging

        logger = logging.getLogger("amqtt-reference")

    for topic_filter in FILTERS:
        for topic in TOPICS:
            expected = Broker._matches(Quiet, topic, topic_filter)  # type: ignore[arg-type]
            assert HardenedBroker._matches(Quiet, topic, topic_filter) == expected, (topic_filter, topic)  # type: ignore[arg-type]
            assert topic_matches(topic_filter, topic) == expected, (topic_filter, topic)


def test_remembered_acl_answers_still_depend_on_the_client() -> None:
    acl = Acl.parse("user dash\ntopic read orders/#\npattern read agents/%c/#\n")
    for _ in range(2):  # the second round is answered from memory
        assert acl.allowed("dash", "a-1", READ, "agents/a-1/assigned")
        assert not acl.allowed("dash", "a-2", READ, "agents/a-1/assigned")
        assert acl.allowed("dash", "a-2", READ, "orders/o-1/status")
        assert not acl.allowed("other", "a-3", READ, "orders/o-1/status")
    # Clients whose rules come out equal share one rule set, so one remembered answer.
    assert acl.rules_for("dash", "x") is not acl.rules_for("dash", "y")
    assert acl.rules_for("other", "x") is acl.rules_for("other", "x")


def _client(port: int, transport: str = "tcp") -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"fast-{uuid.uuid4().hex[:8]}", transport=transport
    )
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")
    connected: queue.Queue[object] = queue.Queue()
    client.on_connect = lambda *args: connected.put(args[3])
    client.connect(HOST, port)
    client.loop_start()
    assert not connected.get(timeout=TIMEOUT).is_failure  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_a_burst_arrives_whole_and_in_order(broker: EmbeddedBroker, transport: str) -> None:  # noqa: F811
    """More messages than the in-flight window, sent as fast as paho can: the sender's
    batches (one WebSocket message for several packets) lose and reorder nothing."""
    received: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    subscriber = _client(broker.ws_port if transport == "websockets" else broker.port, transport)
    subscriber.on_message = lambda _c, _u, message: received.put(message.payload)
    subscriber.on_subscribe = lambda *args: subscribed.put(args)
    subscriber.subscribe("burst/#", qos=1)
    subscribed.get(timeout=TIMEOUT)
    publisher = _client(broker.port)
    try:
        count = 300
        infos = [publisher.publish(f"burst/{n % 7}", str(n).encode(), qos=1) for n in range(count)]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        got = [int(received.get(timeout=TIMEOUT)) for _ in range(count)]
        assert got == list(range(count))
        publisher.publish("burst/0", b"marker", qos=1).wait_for_publish(TIMEOUT)
        assert received.get(timeout=TIMEOUT) == b"marker"  # no duplicates came before it
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()


def test_websocket_listener_does_not_compress(broker: EmbeddedBroker) -> None:  # noqa: F811
    """permessage-deflate cost a compression per subscriber per message."""
    with ws_connect(f"ws://{HOST}:{broker.ws_port}/mqtt", subprotocols=["mqtt"], compression="deflate") as ws:
        assert ws.subprotocol == "mqtt"
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_pings_keep_a_connection_alive_and_silence_ends_it(broker: EmbeddedBroker) -> None:  # noqa: F811
    """Keep-alive 1 s: PINGREQs every 0.5 s for 2.5 s keep it open (each answered); then
    silence closes it within 1.5 x the keep-alive (and a little)."""
    client = RawClient(HOST, broker.port)
    try:
        client.connect(f"ping-{uuid.uuid4().hex[:8]}", keepalive=1)
        for _ in range(5):
            client.sock.sendall(b"\xc0\x00")
            assert client.read_packet(TIMEOUT)[0] == 13  # PINGRESP
            time.sleep(0.5)  # the behaviour under test: a PINGREQ every half keep-alive
        started = time.monotonic()
        assert client.wait_closed(TIMEOUT)
        assert time.monotonic() - started < 1.5 + 1.0
    finally:
        client.close()


def test_garbage_after_connect_still_closes_the_connection(broker: EmbeddedBroker) -> None:  # noqa: F811
    client = RawClient(HOST, broker.port)
    try:
        client.connect(f"bad-{uuid.uuid4().hex[:8]}")
        client.sock.sendall(b"\x40\x03\x00\x01\x00")  # a PUBACK one byte too long
        assert client.wait_closed(TIMEOUT)
    finally:
        client.close()


def test_pubacks_written_together_with_other_packets_each_settle_their_message(
    broker: EmbeddedBroker,  # noqa: F811
) -> None:
    """PUBACKs are taken as they arrive, before the reader loop wakes: two PUBACKs and a
    PINGREQ in one write settle both messages and get the PINGRESP; the third message,
    never acknowledged, is the only one sent again (DUP) when the session resumes."""
    client_id = f"acks-{uuid.uuid4().hex[:8]}"
    subscriber = RawClient(HOST, broker.port)
    publisher = _client(broker.port)
    try:
        subscriber.connect(client_id, clean=False)
        assert subscriber.subscribe(("acks/#", 1)) == [1]
        for n in range(3):
            publisher.publish("acks/n", b"%d" % n, qos=1).wait_for_publish(TIMEOUT)
        sent = [subscriber.read_publish() for _ in range(3)]
        assert [p.payload for p in sent] == [b"0", b"1", b"2"]
        ids = [p.packet_id for p in sent]
        assert None not in ids
        subscriber.sock.sendall(
            b"".join(b"\x40\x02" + packet_id.to_bytes(2, "big") for packet_id in ids[:2])  # type: ignore[union-attr]
            + b"\xc0\x00"  # PINGREQ
        )
        assert subscriber.read_packet(TIMEOUT)[0] == 13  # PINGRESP: read after the two PUBACKs
        subscriber.close()

        again = RawClient(HOST, broker.port)
        try:
            assert again.connect(client_id, clean=False) == (True, 0)
            resent = again.read_publish()
            assert (resent.payload, resent.dup, resent.packet_id) == (b"2", True, ids[2])
            again.puback(ids[2])  # type: ignore[arg-type]
            publisher.publish("acks/n", b"marker", qos=1).wait_for_publish(TIMEOUT)
            assert again.read_publish().payload == b"marker"  # nothing else was resent before it
        finally:
            again.close()
    finally:
        subscriber.close()
        publisher.disconnect()
        publisher.loop_stop()


def test_a_packet_whose_next_bytes_look_like_pubacks_is_read_whole(broker: EmbeddedBroker) -> None:  # noqa: F811
    """A PUBLISH of 8,200 bytes whose topic is 600 bytes long, written in two pieces: the
    second piece starts 40 02, the bytes of a PUBACK (its length's second byte, then the
    topic's length). Taken between packets they would be PUBACKs; in the middle of one
    they are the packet's, which arrives whole."""
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    subscriber = _client(broker.port)
    subscriber.on_message = lambda _c, _u, message: received.put((message.topic, message.payload))
    subscriber.on_subscribe = lambda *args: subscribed.put(args)
    subscriber.subscribe("split/#", qos=1)
    subscribed.get(timeout=TIMEOUT)
    topic = "split/" + "t" * 594
    payload = bytes(range(256)) * 29 + b"p" * (8200 - 2 - 600 - 256 * 29)
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    packet = b"\x30" + bytes([0x80 | len(body) % 128, len(body) // 128]) + body
    assert packet[2:4] == b"\x40\x02"
    publisher = RawClient(HOST, broker.port)
    try:
        publisher.connect(f"split-{uuid.uuid4().hex[:8]}")
        publisher.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        publisher.sock.sendall(packet[:2])
        time.sleep(0.05)  # the behaviour under test: the packet arrives in two pieces
        publisher.sock.sendall(packet[2:])
        publisher.publish("split/marker", b"after")
        assert received.get(timeout=TIMEOUT) == (topic, payload)
        assert received.get(timeout=TIMEOUT) == ("split/marker", b"after")
    finally:
        publisher.close()
        subscriber.disconnect()
        subscriber.loop_stop()


def test_a_topic_already_routed_follows_subscribe_and_unsubscribe(broker: EmbeddedBroker) -> None:  # noqa: F811
    """The broker remembers each topic's readers; a SUBSCRIBE or UNSUBSCRIBE after a
    message was routed on the topic decides who gets the next one."""
    got: dict[str, queue.Queue[bytes]] = {"a": queue.Queue(), "b": queue.Queue()}
    acks: queue.Queue[object] = queue.Queue()
    clients = {}
    for name in got:
        clients[name] = _client(broker.port)
        clients[name].on_message = lambda _c, _u, message, name=name: got[name].put(message.payload)
        clients[name].on_subscribe = clients[name].on_unsubscribe = lambda *args: acks.put(args)
    publisher = _client(broker.port)
    try:
        clients["a"].subscribe([("routes/t", 1), ("routes/marker", 1)])
        clients["b"].subscribe("routes/marker", qos=1)
        acks.get(timeout=TIMEOUT), acks.get(timeout=TIMEOUT)

        def round_trip(payload: bytes) -> dict[str, list[bytes]]:
            publisher.publish("routes/t", payload, qos=1).wait_for_publish(TIMEOUT)
            publisher.publish("routes/marker", b"marker", qos=1).wait_for_publish(TIMEOUT)
            out: dict[str, list[bytes]] = {}
            for name, messages in got.items():
                out[name] = []
                while (message := messages.get(timeout=TIMEOUT)) != b"marker":
                    out[name].append(message)
            return out

        assert round_trip(b"1") == {"a": [b"1"], "b": []}
        assert round_trip(b"2") == {"a": [b"2"], "b": []}  # answered from memory
        clients["b"].subscribe("routes/t", qos=1)
        acks.get(timeout=TIMEOUT)
        assert round_trip(b"3") == {"a": [b"3"], "b": [b"3"]}
        clients["a"].unsubscribe("routes/t")
        acks.get(timeout=TIMEOUT)
        assert round_trip(b"4") == {"a": [], "b": [b"4"]}
    finally:
        for client in (*clients.values(), publisher):
            client.disconnect()
            client.loop_stop()


def test_publish_local_routes_in_order_retains_and_clears(broker: EmbeddedBroker) -> None:  # noqa: F811
    """What the relay hands the broker of its own process (ORDERBUS_BROKER_IN_RELAY) reaches a
    subscriber in order, QoS 1; retained ones are in the store for a later subscriber, and an
    empty retained payload clears one, as a client's PUBLISH would."""
    received: queue.Queue[tuple[str, bytes, int, bool]] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    live = _client(broker.port)
    live.on_message = lambda _c, _u, m: received.put((m.topic, m.payload, m.qos, m.retain))
    live.on_subscribe = lambda *args: subscribed.put(args)
    live.subscribe("local/#", qos=1)
    subscribed.get(timeout=TIMEOUT)
    messages = [(f"local/{n % 3}", str(n).encode(), n >= 297) for n in range(300)]
    assert broker.publish_local(messages) == 300
    assert broker.publish_local([("local/gone", b"x", True), ("local/gone", b"", True)]) == 2
    later = _client(broker.port)
    try:
        got = [received.get(timeout=TIMEOUT) for _ in range(302)]
        assert [(t, p) for t, p, _, _ in got[:300]] == [(t, p) for t, p, _ in messages]
        assert {qos for _, _, qos, _ in got} == {1} and not any(retain for *_, retain in got)
        retained: queue.Queue[tuple[str, bytes]] = queue.Queue()
        later.on_message = lambda _c, _u, m: retained.put((m.topic, m.payload))
        later.on_subscribe = lambda *args: subscribed.put(args)
        later.subscribe("local/#", qos=1)
        subscribed.get(timeout=TIMEOUT)
        assert broker.publish_local([("local/end", b"end", False)]) == 1  # after the retained ones
        seen = []
        while (item := retained.get(timeout=TIMEOUT)) != ("local/end", b"end"):
            seen.append(item)
        assert sorted(seen) == [
            ("local/0", b"297"),
            ("local/1", b"298"),
            ("local/2", b"299"),
        ]  # no local/gone
    finally:
        for client in (live, later):
            client.disconnect()
            client.loop_stop()
    broker.stop()
    with pytest.raises(BrokerStopped):
        broker.publish_local([("local/0", b"after", False)])
