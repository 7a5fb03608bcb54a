"""Connections that hold a broker's resources: half a CONNECT, a reader that never reads,
2,000 idle connections. On both brokers; everyone else must go on being served.

The embedded broker and Mosquitto each run with the service's login files. For the
2,000 connections both run as processes of their own (``python -m broker``, and
Mosquitto from the repository's mosquitto.conf), so that their memory and open files
can be read from /proc. All traffic goes to 127.0.0.1 and every socket is closed.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker.hardened import CONNECT_TIMEOUT, KEEPALIVE_FACTOR
from contract import agent_presence, presence
from order_service.accounts import broker_logins
from order_service.config import Settings
from order_service.store.db import db
from order_service.store.models import Agent, new_id
from tests.broker_process import (  # noqa: F401 (fixture)
    FILES,
    BrokerProcess,
    broker_process,
    file_limit,
    files_within,
    open_files,
    proc_status,
)
from tests.mqtt_raw import CONNECT, RawClient, _packet, _string
from tests.test_broker_security import (  # noqa: F401 (fixtures)
    Target,
    broker_kind,
    connect,
    login_accepted,
    service,
    settings_overrides,
    target,
)

IDLE = 2_000
HALF_OPEN = 50


def half_connect(client_id: str) -> bytes:
    """The first bytes of a valid CONNECT: the fixed header promises more than is sent."""
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _string(client_id)
    return _packet(CONNECT, 0, body)[:6]


def served_by_others(target: Target, connect, login: dict, topic: str, timeout: float = 5.0) -> float:
    """Seconds for a publish of the service to reach a dashboard (``login``) that connects now."""
    board = connect(login["username"], login["password"])
    assert board.ok, board.rc
    assert board.subscribe("orders/#") == [1]
    started = time.monotonic()
    connect(*service(target)).publish(topic, b'{"probe": true}')
    board.wait_for(topic, timeout)
    return time.monotonic() - started


def test_half_a_connect_then_silence_is_dropped_and_others_are_served(target: Target, connect, admin):
    """Fifty connections each send half a CONNECT and stall. Others log in and receive
    meanwhile; the embedded broker closes each stalled one within CONNECT_TIMEOUT (10 s).
    Mosquitto keeps a connection without a CONNECT for 1.5 x 60 s (its default keep-alive
    before a CONNECT): too long to wait for here; it serves the others all along."""
    stalled = []
    try:
        for n in range(HALF_OPEN):
            sock = socket.create_connection((target.host, target.port), timeout=5)
            sock.sendall(half_connect(f"stall-{n}"))
            stalled.append(sock)
        started = time.monotonic()
        assert served_by_others(target, connect, admin.mqtt, "orders/o_half/status") < 2.0
        if target.kind != "amqtt":
            return
        deadline = started + CONNECT_TIMEOUT + 5
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert sock.recv(1) == b"", "the broker answered half a CONNECT"
            except TimeoutError:
                pytest.fail(f"a half CONNECT was still open {time.monotonic() - started:.1f} s later")
            except ConnectionResetError:
                pass
        waited = time.monotonic() - started
        assert waited >= CONNECT_TIMEOUT - 1, f"dropped after {waited:.1f} s, before its timeout"
        assert served_by_others(target, connect, admin.mqtt, "orders/o_after_half/status") < 2.0
    finally:
        for sock in stalled:
            sock.close()


def test_a_device_that_never_reads_is_dropped_by_keepalive_and_stalls_no_one(
    target: Target, connect, make_agent, admin
):
    """An agent's device subscribes, then neither reads nor writes (its receive buffer
    tiny) while the service sends it 2,000 messages of 4 KB. The broker drops the device
    when its keep-alive (2 s) runs out: its will (offline) reaches a dashboard within
    1.5 x 2 s plus a margin for a busy machine; the dashboard gets all 2,000 too."""
    agent = make_agent()
    board = connect(admin.mqtt["username"], admin.mqtt["password"])  # reads agents/#
    assert board.subscribe(f"agents/{agent.agent_id}/assigned", agent_presence(agent.agent_id)) == [1, 1]
    stuck = RawClient(target.host, target.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, no autotuning
    will = (
        agent_presence(agent.agent_id),
        presence(agent.agent_id, "offline", "2030-01-01T00:00:00Z"),
        1,
        True,
    )
    assert stuck.connect(
        agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], keepalive=2, will=will
    ) == (False, 0)
    assert stuck.subscribe((f"agents/{agent.agent_id}/assigned", 1)) == [1]
    try:
        started = time.monotonic()  # from here the device is silent and reads nothing
        feed = connect(*service(target))
        payload = b"x" * 4096
        for n in range(IDLE):
            feed.client.publish(f"agents/{agent.agent_id}/assigned", b"%06d" % n + payload, qos=1)
        feed.publish(f"agents/{agent.agent_id}/assigned", b"last")
        message = board.wait_for(agent_presence(agent.agent_id), timeout=KEEPALIVE_FACTOR * 2 + 7)
        waited = time.monotonic() - started
        assert message.payload == will[1]
        assert 2 <= waited <= KEEPALIVE_FACTOR * 2 + 7, waited
        assigned = f"agents/{agent.agent_id}/assigned"
        with board._event:  # "last" was published after the 2,000
            assert board._event.wait_for(lambda: any(m.payload == b"last" for m in board.messages), 30)
        assert len([m for m in board.messages if m.topic == assigned]) == IDLE + 1
        print(f"\n{target.kind}: the silent device dropped after {waited:.1f} s")
    finally:
        stuck.close()


# --- 2,000 idle connections --------------------------------------------------------------


def _device_logins(settings: Settings, count: int) -> dict[str, str]:
    """``count`` agents with their broker logins (what POST /agents issues), in one go."""
    with db.connection_context(), db.atomic():  # one commit, not 2,000
        ids = [new_id("agt") for _ in range(count)]
        Agent.insert_many([{"id": i, "name": i} for i in ids]).execute()
        secrets = {i: broker_logins.issue_agent(Agent.get_by_id(i)) for i in ids}
    broker_logins.sync_files(settings)
    return secrets


@pytest.mark.parametrize("idle", ["tcp", "devices"])
@pytest.mark.timeout(90)
def test_two_thousand_idle_connections_cost_little_and_stall_no_one(
    broker_process: BrokerProcess, idle, admin
):
    """2,000 connections that then do nothing: bare TCP connections that never send a
    CONNECT (anyone can open those), or devices logged in with their own logins. The
    broker keeps serving a client that arrives meanwhile, its memory grows by a bounded
    amount per connection, and once they close it holds no file of theirs."""
    broker = broker_process
    assert file_limit(broker.pid) >= FILES, "the broker cannot open enough files"
    probe = broker
    logins = _device_logins(broker.settings, IDLE) if idle == "devices" else {}
    if logins:
        assert login_accepted(probe, *next(iter(logins.items())), timeout=15)
    files_before, rss_before = open_files(broker.pid), proc_status(broker.pid, "VmRSS")
    made: list[socket.socket] = []
    lock = threading.Lock()

    def open_one(agent_id: str | None) -> None:
        if agent_id is None:
            sock = socket.create_connection((broker.host, broker.port), timeout=30)
        else:
            raw = RawClient(broker.host, broker.port, timeout=30)
            assert raw.connect(agent_id, username=agent_id, password=logins[agent_id]) == (False, 0)
            sock = raw.sock
        with lock:
            made.append(sock)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(open_one, list(logins) or [None] * IDLE))
        opened = time.monotonic() - started
        held = files_within(broker.pid, lambda n: n >= files_before + IDLE - 10, timeout=10) - files_before
        if idle == "devices" or broker.kind == "mosquitto":
            assert held >= IDLE - 10, f"the broker holds {held} of {IDLE} connections"
        grown_kb = proc_status(broker.pid, "VmRSS") - rss_before
        latency = _served(probe, admin.mqtt)
    finally:
        for sock in made:
            sock.close()
    released = files_within(broker.pid, lambda n: n <= files_before + 5, timeout=15)
    print(
        f"\n{broker.kind}, {IDLE} idle {idle}: opened in {opened:.1f} s, {held} held at once; memory "
        f"+{grown_kb / 1024:.1f} MiB ({grown_kb / max(held, 1):.1f} KiB each); a new client served in "
        f"{latency * 1000:.0f} ms"
    )
    assert latency < 2.0, latency
    assert grown_kb < max(held, 1) * 64, f"{grown_kb / max(held, 1):.0f} KiB per idle connection"
    assert released <= files_before + 5, "the broker kept files of closed connections"
    assert _served(probe, admin.mqtt) < 2.0  # and serves on


def _served(probe: Target, login: dict) -> float:
    """Seconds for a service publish to reach a reader that connects now (both closed after).

    Raw clients: paho waits with select(), which cannot watch a descriptor numbered past
    1,024, and this process holds 2,000 sockets."""
    reader, writer = RawClient(probe.host, probe.port), RawClient(probe.host, probe.port)
    try:
        assert reader.connect(new_id("probe"), username=login["username"], password=login["password"])[1] == 0
        assert reader.subscribe(("orders/#", 1)) == [1]
        username, secret = service(probe)
        assert writer.connect(new_id("probe"), username=username, password=secret)[1] == 0
        started = time.monotonic()
        writer.publish("orders/o_probe/status", b'{"probe": true}')
        assert reader.read_publish(10).topic == "orders/o_probe/status"
        return time.monotonic() - started
    finally:
        reader.close()
        writer.close()
