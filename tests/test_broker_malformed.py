"""Malformed MQTT packets against the embedded broker: it stays up and keeps serving others.

Each case opens a raw TCP connection (tests/mqtt_raw.py), sends bytes no conforming
client would send, and expects the broker to close that connection within seconds,
deliver nothing that connection tried to publish, and go on delivering to a paho
subscriber that was connected and subscribed all along. MQTT 3.1.1 section numbers
name the rule each case breaks.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from broker.hardened import DEFAULT_MAX_PACKET_BYTES
from broker.plugins import plugin_config
from broker.server import EmbeddedBroker
from tests.mqtt_fixtures import Subscriber
from tests.mqtt_raw import CONNECT, PUBLISH, SUBSCRIBE, RawClient, _packet, _string

HOST = "127.0.0.1"
CLOSE_WITHIN = 5.0


def _connect_body(level: int = 4, name: bytes = b"MQTT", client_id: str = "raw", flags: int = 0x02) -> bytes:
    return _string(name) + bytes([level, flags]) + struct.pack("!H", 30) + _string(client_id)


def _publish(topic: bytes, payload: bytes = b"x") -> bytes:
    return _packet(PUBLISH, 0, _string(topic) + payload)


def _connected(broker: EmbeddedBroker, client_id: str) -> RawClient:
    raw = RawClient(HOST, broker.port, timeout=CLOSE_WITHIN)
    assert raw.connect(client_id) == (False, 0)
    return raw


# name -> (connect first?, bytes to send)
CASES: dict[str, tuple[bool, bytes]] = {
    "garbage before CONNECT": (False, bytes(range(256)) * 4),
    "PUBLISH before CONNECT [3.1.0-1]": (False, _publish(b"probe/evil")),
    "SUBSCRIBE before CONNECT [3.1.0-1]": (
        False,
        _packet(SUBSCRIBE, 2, b"\x00\x01" + _string("#") + b"\x01"),
    ),
    "wrong protocol level [3.1.2-2]": (False, _packet(CONNECT, 0, _connect_body(level=9))),
    "wrong protocol name [3.1.2-1]": (False, _packet(CONNECT, 0, _connect_body(name=b"MQTZ"))),
    "reserved CONNECT flag [3.1.2-3]": (False, _packet(CONNECT, 0, _connect_body(flags=0x03))),
    "invalid UTF-8 client id [1.5.3-1]": (
        False,
        _packet(CONNECT, 0, _connect_body(client_id="x")[:-1] + b"\xff"),
    ),
    "reserved packet type 0": (False, b"\x00\x00"),
    "reserved packet type 15": (False, b"\xf0\x00"),
    "remaining length of five bytes [2.2.3]": (False, b"\x10\xff\xff\xff\xff\x7f" + b"\x00" * 64),
    "second CONNECT [3.1.0-2]": (True, _packet(CONNECT, 0, _connect_body(client_id="again"))),
    "invalid UTF-8 topic [1.5.3-1]": (True, _publish(b"probe/\xc3\x28")),
    "NUL in a topic [1.5.3-2]": (True, _publish(b"probe/a\x00b")),
    "wildcard in a PUBLISH topic [3.3.2-2]": (True, _publish(b"probe/#")),
    "empty topic [4.7.3-1]": (True, _publish(b"")),
    "topic length beyond the packet": (True, _packet(PUBLISH, 0, b"\xff\xff" + b"probe/short")),
    "QoS 3 [3.3.1-4]": (True, _packet(PUBLISH, 6, _string("probe/evil") + b"\x00\x01x")),
    "SUBSCRIBE with reserved flags [3.8.1-1]": (
        True,
        _packet(SUBSCRIBE, 0, b"\x00\x01" + _string("#") + b"\x01"),
    ),
    "SUBSCRIBE without a filter [3.8.3-3]": (True, _packet(SUBSCRIBE, 2, b"\x00\x01")),
    "invalid UTF-8 filter [1.5.3-1]": (
        True,
        _packet(SUBSCRIBE, 2, b"\x00\x01" + _string(b"\xed\xa0\x80") + b"\x01"),
    ),
}


@pytest.fixture
def served():
    """An anonymous embedded broker with a subscriber on probe/# that must keep receiving."""
    instance = EmbeddedBroker(plugins=plugin_config(anonymous=True))
    instance.start()
    sub = Subscriber(HOST, instance.port, ("probe/#",)).start()
    publisher = Subscriber(HOST, instance.port, ("unused/none",)).start()
    yield instance, sub, publisher
    sub.stop()
    publisher.stop()
    instance.stop()


def _still_serving(broker: EmbeddedBroker, sub: Subscriber, publisher: Subscriber, marker: str) -> None:
    publisher.client.publish(f"probe/{marker}", b"alive", qos=1)
    sub.wait_for(lambda r: r.topic == f"probe/{marker}", timeout=10)
    assert not [r for r in sub.seen if r.topic == "probe/evil"], "a malformed client's publish was delivered"
    fresh = RawClient(HOST, broker.port)  # and a newcomer is still let in
    assert fresh.connect(f"fresh-{marker}") == (False, 0)
    fresh.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_packet_closes_only_its_own_connection(served, name):
    """The broker closes the offending connection and goes on serving everyone else."""
    broker, sub, publisher = served
    connect_first, data = CASES[name]
    raw = _connected(broker, "offender") if connect_first else RawClient(HOST, broker.port)
    try:
        raw.sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed even before we finished: fine
    assert raw.wait_closed(CLOSE_WITHIN), f"{name}: the broker kept the connection open"
    raw.close()
    _still_serving(broker, sub, publisher, "after")


def test_an_oversized_packet_is_refused_before_it_is_read(served):
    """A PUBLISH claiming more than the packet limit (1 MiB, as mosquitto.conf's
    message_size_limit) is cut off at its header, not buffered: the maximum remaining
    length (256 MiB) is announced and only a little of it sent."""
    broker, sub, publisher = served
    raw = _connected(broker, "huge")
    header = bytes([PUBLISH << 4]) + b"\xff\xff\xff\x7f"  # remaining length 268,435,455
    raw.sock.sendall(header + _string("probe/evil"))
    sent = 0
    chunk = b"\x00" * 65536
    try:
        while sent < 8 * DEFAULT_MAX_PACKET_BYTES:
            raw.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert raw.wait_closed(CLOSE_WITHIN), "the broker kept reading an oversized packet"
    raw.close()
    _still_serving(broker, sub, publisher, "after-huge")


def test_a_packet_at_the_limit_is_still_delivered(served):
    """The limit refuses only what is over it: a payload just under 1 MiB is delivered."""
    broker, sub, publisher = served
    payload = b"p" * (DEFAULT_MAX_PACKET_BYTES - 100)
    publisher.client.publish("probe/big", payload, qos=1)
    got = sub.wait_for(lambda r: r.topic == "probe/big", timeout=10)
    assert got.payload == payload


def test_truncated_packets_and_vanished_peers_leave_the_broker_serving(served):
    """Clients that send half a packet and then hang up, or stall, cost the broker nothing."""
    broker, sub, publisher = served
    partial = _packet(CONNECT, 0, _connect_body(client_id="half"))
    for cut in (1, 2, 5, len(partial) - 1):
        sock = socket.create_connection((HOST, broker.port))
        sock.sendall(partial[:cut])
        sock.close()
    stalled = [socket.create_connection((HOST, broker.port)) for _ in range(20)]
    for sock in stalled:
        sock.sendall(partial[:3])  # and then nothing: they hold a connection open
    try:
        _still_serving(broker, sub, publisher, "after-truncated")
    finally:
        for sock in stalled:
            sock.close()


def test_a_flood_of_random_bytes_from_many_connections(served):
    """Fifty connections of random bytes at once: the broker closes them and keeps serving."""
    broker, sub, publisher = served
    rounds = int(os.environ.get("ORDERBUS_CHAOS_SCALE", "1")) * 50
    socks = []
    for _ in range(rounds):
        sock = socket.create_connection((HOST, broker.port))
        try:
            sock.sendall(os.urandom(512))
        except OSError:
            pass
        socks.append(sock)
    deadline = time.monotonic() + 3
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        for sock in list(open_):
            sock.settimeout(0.05)
            try:
                if not sock.recv(4096):
                    open_.remove(sock)
            except TimeoutError:
                pass
            except OSError:
                open_.remove(sock)
    for sock in socks:
        sock.close()
    _still_serving(broker, sub, publisher, "after-flood")


@pytest.mark.parametrize(
    "data",
    [_publish(b"probe/\xc3\x28"), bytes([PUBLISH << 4]) + b"\xff\xff\xff\x7f" + b"\x00" * 1024],
    ids=["invalid UTF-8 topic", "oversized packet"],
)
def test_the_websocket_listener_applies_the_same_checks(served, data):
    """Over MQTT-over-WebSocket (the dashboards' path) a malformed packet closes that
    connection too, and the subscriber keeps receiving."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    broker, sub, publisher = served
    with connect(f"ws://{HOST}:{broker.ws_port}/mqtt", subprotocols=["mqtt"], open_timeout=5) as ws:
        ws.send(_packet(CONNECT, 0, _connect_body(client_id="ws-offender")))
        assert ws.recv(timeout=5)[:2] == b"\x20\x02"  # CONNACK
        ws.send(data)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=CLOSE_WITHIN)
    _still_serving(broker, sub, publisher, "after-ws")
