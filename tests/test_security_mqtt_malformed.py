"""Malformed and oversized packets against the production broker, and a huge CONNECT
before any login against both brokers.

tests/test_broker_malformed.py sends the embedded broker each packet no conforming
client would send; here Mosquitto, started from the repository's mosquitto.conf, gets
the same cases: it must close the offending connection and go on serving the others.
A CONNECT announcing 256 MiB, sent by anyone who can reach the port (no login is
checked before the packet is whole), must be cut off at its header on both brokers and
over both listeners, not buffered: Mosquitto's ``message_size_limit`` bounds only
PUBLISH payloads, so mosquitto.conf also sets ``max_packet_size``. Mosquitto 2.0.11's
WebSocket listener ignores it: that case is an expected failure, the known gap that
docs/security.md records.
"""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.broker_process import BrokerProcess, broker_process, proc_status  # noqa: F401 (fixture)
from tests.mqtt_raw import CONNECT, RawClient
from tests.test_broker_malformed import CASES, CLOSE_WITHIN
from tests.test_broker_security import (  # noqa: F401 (fixtures)
    Target,
    broker_kind,
    connect,
    login_accepted,
    service,
    settings_overrides,
    target,
)

HUGE_HEADER = bytes([CONNECT << 4]) + b"\xff\xff\xff\x7f"  # remaining length 268,435,455
SENT_AT_MOST = 16 * 1024 * 1024
CHUNK = b"\x00" * 65536
RSS_GROWTH_KB = 8 * 1024  # a broker that buffered the packet grows by what was sent
MOSQUITTO_WS_GAP = (
    "Mosquitto 2.0.11's WebSocket listener allocates the length a packet announces, before any "
    "login and whatever max_packet_size says (docs/security.md, known gaps)"
)


@pytest.mark.parametrize("broker_kind", ["mosquitto"])
def test_mosquitto_closes_a_malformed_connection_and_serves_on(
    target: Target, connect, admin, make_agent, subtests
):
    """Every case of tests/test_broker_malformed.py, against Mosquitto: the offending
    connection is closed within seconds; a dashboard connected all along keeps receiving."""
    agent = make_agent()
    board = connect(admin.mqtt["username"], admin.mqtt["password"])
    assert board.subscribe("orders/#") == [1]
    feed = connect(*service(target))
    for n, (name, (connect_first, data)) in enumerate(CASES.items()):
        with subtests.test(case=name):
            raw = RawClient(target.host, target.port, timeout=CLOSE_WITHIN)
            try:
                if connect_first:
                    login = {"username": agent.agent_id, "password": agent.mqtt["password"]}
                    assert raw.connect(agent.agent_id, **login) == (False, 0)
                try:
                    raw.sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed before we finished: fine
                assert raw.wait_closed(CLOSE_WITHIN), f"{name}: Mosquitto kept the connection open"
            finally:
                raw.close()
            feed.publish(f"orders/o_case{n}/status", b'{"alive": true}')
            board.wait_for(f"orders/o_case{n}/status", timeout=10)


class Attack:
    """A CONNECT announcing 256 MiB, sent in chunks; the broker's memory is read as it goes."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self.sent = 0
        self.before = self.peak = proc_status(broker.pid, "VmRSS")

    def chunks(self):
        """Chunks to send, until the broker has been sent SENT_AT_MOST bytes."""
        while self.sent < SENT_AT_MOST:
            yield CHUNK
            self.sent += len(CHUNK)
            self.peak = max(self.peak, proc_status(self.broker.pid, "VmRSS"))

    @property
    def grown(self) -> int:
        """KiB the broker grew by while the connection was open (it frees them on closing)."""
        return self.peak - self.before

    def over_tcp(self) -> bool:
        """Whether the broker closed the connection."""
        raw = RawClient(self.broker.host, self.broker.port, timeout=CLOSE_WITHIN)
        try:
            raw.sock.sendall(HUGE_HEADER)
            for chunk in self.chunks():
                raw.sock.sendall(chunk)
            return raw.wait_closed(CLOSE_WITHIN)
        except (BrokenPipeError, ConnectionResetError):
            return True
        finally:
            raw.close()

    def over_websocket(self) -> bool:
        """The same over MQTT-over-WebSocket, the packet spread over messages of 64 KiB."""
        url = f"ws://{self.broker.host}:{self.broker.ws_port}/mqtt"
        with ws_connect(url, subprotocols=["mqtt"], open_timeout=5, close_timeout=1) as ws:
            try:
                ws.send(HUGE_HEADER)
                for chunk in self.chunks():
                    ws.send(chunk)
                ws.recv(timeout=CLOSE_WITHIN)
            except ConnectionClosed:
                return True
            except TimeoutError:
                return False
        return False


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
def test_a_huge_connect_before_any_login_is_cut_off_at_its_header(
    broker_process: BrokerProcess, transport, request
):
    """No login is needed to send a CONNECT: one announcing 256 MiB is closed after its
    header, the broker's memory does not grow by what was sent, and it serves on."""
    broker = broker_process
    if (broker.kind, transport) == ("mosquitto", "websocket"):
        # Strict: once a Mosquitto holds, this fails and the known gap comes off the docs.
        request.applymarker(pytest.mark.xfail(strict=True, reason=MOSQUITTO_WS_GAP))
    attack = Attack(broker)
    closed = attack.over_tcp() if transport == "tcp" else attack.over_websocket()
    print(
        f"\n{broker.kind} over {transport}: {attack.sent >> 10} KiB sent before the close; "
        f"memory +{attack.grown} KiB"
    )
    assert closed, f"{broker.kind} kept a CONNECT of 256 MiB open over {transport}"
    assert attack.grown < RSS_GROWTH_KB, f"{broker.kind} buffered {attack.grown} KiB of a CONNECT"
    assert login_accepted(broker, *service(broker))
