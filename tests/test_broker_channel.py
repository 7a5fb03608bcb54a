"""The publish channel (broker/channel.py): the relay hands its messages to the embedded
broker's process in frames instead of MQTT PUBLISHes.

A real broker in this process with its channel, real paho subscribers, real sockets; and
the whole system as `make run` runs it (harness/system.py), whose relay publishes over the
channel, against the same system with ``ORDERBUS_RELAY_CHANNEL=false``.
"""

from __future__ import annotations

import queue
import socket
import stat
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.channel import (
    GREETING,
    MAX_CONNECTIONS,
    MAX_FRAME_BYTES,
    WELCOME,
    ChannelUnavailable,
    PublishChannel,
    decode,
    encode,
)
from broker.server import EmbeddedBroker
from harness.system import make_system
from tests.helpers import wait_until

HOST = "127.0.0.1"
TIMEOUT = 10.0
ITEMS = [{"name": "Tea", "quantity": 2, "unit_price_cents": 300}]


@pytest.fixture
def channel_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker(anonymous=True, channel_file=tmp_path / "mqtt" / "publish")
    instance.start()
    yield instance
    instance.stop()


def _subscriber(port: int, topic: str) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes, bool]]]:
    received: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chan-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, m: received.put((m.topic, m.payload, m.retain))
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
    client.connect(HOST, port)
    client.loop_start()
    assert subscribed.wait(TIMEOUT)
    return client, received


def _path(broker: EmbeddedBroker) -> Path:
    assert broker.channel is not None
    return broker.channel.path


def test_the_frame_format_round_trips() -> None:
    messages = [("orders/new", b"{}", True), ("ü/x", bytes(range(256)) * 40, False), ("t", b"", True)]
    frame = encode(messages)
    (length,) = struct.unpack("!I", frame[:4])
    assert length == len(frame) - 4
    assert decode(frame[4:]) == messages
    for broken in (frame[4:-1], frame[4:] + b"x", b"\x00\x00", frame[4:8] + b"\x02" + frame[9:]):
        with pytest.raises(ValueError):
            decode(broken)


def test_messages_reach_subscribers_in_order_and_retained_ones_stay(channel_broker: EmbeddedBroker) -> None:
    path = _path(channel_broker)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the secret
    live, received = _subscriber(channel_broker.port, "chan/#")
    channel = PublishChannel.open(path)
    try:
        messages = [(f"chan/{n % 3}", str(n).encode(), n >= 297) for n in range(300)]
        assert channel(messages, TIMEOUT) == 300
        assert channel([("chan/big", b"x" * 1_500_000, False), ("chan/end", b"end", False)], TIMEOUT) == 2
        got = [received.get(timeout=TIMEOUT) for _ in range(302)]
        assert [(t, p) for t, p, _ in got[:300]] == [(t, p) for t, p, _ in messages]
        assert got[300][1] == b"x" * 1_500_000 and got[301][:2] == ("chan/end", b"end")
        assert channel_broker.channel is not None and channel_broker.channel.frames >= 3  # split by size
        later, retained = _subscriber(channel_broker.port, "chan/#")
        seen = sorted(retained.get(timeout=TIMEOUT) for _ in range(3))
        assert seen == [("chan/0", b"297", True), ("chan/1", b"298", True), ("chan/2", b"299", True)]
        later.loop_stop()
    finally:
        channel.close()
        live.loop_stop()


def _raw(path: Path) -> tuple[socket.socket, bytes]:
    port, secret = path.read_bytes().split()
    return socket.create_connection((HOST, int(port)), TIMEOUT), secret


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_connection_without_the_secret_publishes_nothing(channel_broker: EmbeddedBroker) -> None:
    path = _path(channel_broker)
    _live, received = _subscriber(channel_broker.port, "chan/#")
    sock, secret = _raw(path)
    wrong = bytes(reversed(secret))
    sock.sendall(GREETING + wrong + b"\n" + encode([("chan/x", b"forged", True)]))
    assert _closed(sock)  # no welcome: closed
    sock.close()
    with pytest.raises(ChannelUnavailable):  # a stale or foreign file is refused the same way
        bad = path.with_name("other")
        bad.write_bytes(path.read_bytes().split()[0] + b" " + wrong)
        PublishChannel.open(bad)
    channel = PublishChannel.open(path)  # positive control: with the secret, it goes through
    assert channel([("chan/y", b"real", False)], TIMEOUT) == 1
    assert received.get(timeout=TIMEOUT) == ("chan/y", b"real", False)
    assert received.empty()  # the forged one never came
    channel.close()


@pytest.mark.parametrize("frame", ["too large", "malformed"])
def test_a_bad_frame_closes_the_channel(channel_broker: EmbeddedBroker, frame: str) -> None:
    _live, received = _subscriber(channel_broker.port, "chan/#")
    sock, secret = _raw(_path(channel_broker))
    sock.sendall(GREETING + secret + b"\n")
    assert sock.recv(len(WELCOME)) == WELCOME
    if frame == "too large":
        sock.sendall(struct.pack("!I", MAX_FRAME_BYTES + 1))
    else:
        body = struct.pack("!I", 2) + encode([("chan/x", b"x", False)])[8:]  # says two, holds one
        sock.sendall(struct.pack("!I", len(body)) + body)
    assert _closed(sock)
    sock.close()
    channel = PublishChannel.open(_path(channel_broker))  # the broker serves the next one
    assert channel([("chan/after", b"ok", False)], TIMEOUT) == 1
    assert received.get(timeout=TIMEOUT) == ("chan/after", b"ok", False)
    channel.close()


def test_a_stale_file_or_a_stranger_on_its_port_is_no_channel(tmp_path: Path) -> None:
    path = tmp_path / "publish"
    with pytest.raises(ChannelUnavailable, match="no "):
        PublishChannel.open(path)
    stranger = socket.create_server((HOST, 0))
    port = stranger.getsockname()[1]
    path.write_bytes(b"%d %s\n" % (port, b"0" * 32))

    def answer() -> None:
        conn, _ = stranger.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(ChannelUnavailable, match="not this broker's"):
        PublishChannel.open(path)
    stranger.close()
    with pytest.raises(ChannelUnavailable):  # nobody listens there now
        PublishChannel.open(path)


def test_the_file_goes_when_the_broker_stops(tmp_path: Path) -> None:
    path = tmp_path / "publish"
    broker = EmbeddedBroker(anonymous=True, channel_file=path)
    broker.start()
    assert path.exists()
    broker.stop()
    assert not path.exists()


@pytest.mark.parametrize("channel", ["true", "false"])
def test_the_relay_of_make_run_publishes_over_the_channel(tmp_path: Path, channel: str) -> None:
    """The system as `make run` runs it: the relay opens the broker's channel and an order
    reaches a dashboard through it; with ORDERBUS_RELAY_CHANNEL=false it goes over MQTT
    (the control: the same order arrives, and the broker served no frame)."""
    system = make_system(tmp_path, ORDERBUS_RELAY_CHANNEL=channel)
    try:
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        login = system.admin.login("admin", password)["mqtt"]
        received: queue.Queue[bytes] = queue.Queue()
        subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=login["client_id"])
        client.username_pw_set(login["username"], login["password"])
        client.on_message = lambda _c, _u, m: received.put(m.payload)
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_connect = lambda c, *args: c.subscribe("orders/new", qos=1)
        client.connect(HOST, int(system.env["ORDERBUS_BROKER_PORT"]))
        client.loop_start()
        assert subscribed.wait(TIMEOUT)
        body = {"customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"}, "items": ITEMS}
        order = system.admin.request("POST", "/orders", body)
        wait_until(lambda: any(order["id"].encode() in m for m in list(received.queue)), TIMEOUT)
        client.loop_stop()
        broker_log = (system.tmp / "broker.log").read_text()
        relay_log = (system.tmp / "relay.log").read_text()
        assert "publish channel on 127.0.0.1" in broker_log
        if channel == "true":
            assert "publish channel: relay connected" in broker_log, broker_log
            assert "publishing over MQTT" not in relay_log
        else:
            assert "publish channel: relay connected" not in broker_log
    finally:
        system.close()


def test_connections_are_bounded(channel_broker: EmbeddedBroker) -> None:
    """Eight connections that never greet fill the channel; a ninth is refused until they go."""
    path = _path(channel_broker)
    idle = [_raw(path)[0] for _ in range(MAX_CONNECTIONS)]
    try:
        wait_until(lambda: channel_broker.channel and len(channel_broker.channel._clients) == MAX_CONNECTIONS)
        with pytest.raises(ChannelUnavailable):
            PublishChannel.open(path)
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: channel_broker.channel and not channel_broker.channel._clients)
    channel = PublishChannel.open(path)  # positive control
    assert channel([("chan/z", b"z", False)], TIMEOUT) == 1
    channel.close()
