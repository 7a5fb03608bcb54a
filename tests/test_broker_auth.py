"""Broker authentication and ACL (broker/plugins.py): the files Mosquitto reads, enforced by amqtt.

Real EmbeddedBroker instances on ephemeral ports and real paho clients; the password and
ACL files are written with broker.credfiles, as the service writes them. Callbacks only
put on queues; the test thread asserts. Absence is proven with a marker: a message that
must arrive *after* the forbidden one would have (same publisher, QoS 1, acknowledged in
order), so once the marker is in, nothing forbidden can still be on its way.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker import credfiles
from broker.credstore import CHECK_INTERVAL
from broker.server import EmbeddedBroker, pick_free_port
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 5.0
# A change to a file is noticed within CHECK_INTERVAL; allow for a loaded machine.
RELOAD_TIMEOUT = CHECK_INTERVAL + 4.0

SERVICE, ADMIN = "orderbus-service", "admin_1"
ACL = """
user orderbus-service
topic readwrite #

user admin_1
topic read orders/#
topic read agents/#

# A shift lead: follows the whole fleet except agent 2 (another franchise).
user agt_7
topic read agents/#
topic deny agents/agt_2/#

pattern read agents/%u/#
pattern write agents/%u/presence
"""


class Creds:
    """The two files in tmp_path; ``secrets`` maps each user to its current secret."""

    def __init__(self, directory: Path) -> None:
        self.password_file, self.acl_file = directory / "passwd", directory / "acl"
        self.secrets: dict[str, str] = {}
        self._hashes: dict[str, str] = {}

    def set_users(self, *usernames: str, rotate: tuple[str, ...] = (), iterations: int = 101) -> None:
        """Exactly these users; new ones and ``rotate`` get a fresh secret."""
        for name in set(self.secrets) - set(usernames):
            del self.secrets[name], self._hashes[name]
        for name in usernames:
            if name not in self.secrets or name in rotate:
                self.secrets[name] = credfiles.new_secret()
                self._hashes[name] = credfiles.hash_password(self.secrets[name], iterations=iterations)
        credfiles.write_atomically(self.password_file, credfiles.render_password_file(self._hashes))

    def set_acl(self, text: str) -> None:
        credfiles.write_atomically(self.acl_file, text)


class Peer:
    """A paho client (no automatic reconnect) whose events land on queues."""

    def __init__(
        self,
        port: int,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
        **kw,
    ) -> None:
        self.connacks: queue.Queue[mqtt.ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[tuple[int, list[mqtt.ReasonCode]]] = queue.Queue()
        self.pubacks: queue.Queue[int] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self.port = port
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=kw.pop("client_id", None) or f"t-{username}-{uuid.uuid4().hex[:8]}",
            reconnect_on_failure=False,
            **kw,
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        if will is not None:
            self.paho.will_set(*will, qos=1)
        self.paho.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.put(reason)
        self.paho.on_subscribe = lambda _c, _u, mid, codes, _p: self.subacks.put((mid, codes))
        self.paho.on_publish = lambda _c, _u, mid, _r, _p: self.pubacks.put(mid)
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)
        self.paho.on_disconnect = lambda *_a: self.disconnected.set()

    def connect(self) -> mqtt.ReasonCode:
        """The CONNACK's reason; the caller asserts on it."""
        self.paho.connect(HOST, self.port, keepalive=30)
        self.paho.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic_filter: str) -> bool:
        """Whether the broker granted the subscription (False: SUBACK 0x80)."""
        rc, mid = self.paho.subscribe(topic_filter, qos=1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        acked_mid, codes = self.subacks.get(timeout=TIMEOUT)
        assert acked_mid == mid
        return not codes[0].is_failure

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1, returns once PUBACKed: a denied publish is acked too, then dropped."""
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        assert self.pubacks.get(timeout=TIMEOUT) == info.mid

    def received_until(self, marker_topic: str, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
        """Every message up to and including the first on ``marker_topic``."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"marker {marker_topic} never arrived; got {got}") from None
            got.append((message.topic, bytes(message.payload)))
            if message.topic == marker_topic:
                return got

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def creds(tmp_path: Path) -> Creds:
    files = Creds(tmp_path)
    files.set_users(SERVICE, ADMIN, "agt_1", "agt_2", "agt_3", "agt_7")
    files.set_acl(ACL)
    return files


@pytest.fixture
def auth_broker(creds: Creds) -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker(password_file=creds.password_file, acl_file=creds.acl_file)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(port: int, username: str | None = None, password: str | None = None, **kw) -> Peer:
        made.append(Peer(port, username, password, **kw))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def login(auth_broker: EmbeddedBroker, creds: Creds, peers) -> Callable[..., Peer]:
    """A connected client of ``username`` with its current secret."""

    def connect(username: str, **kw) -> Peer:
        peer = peers(auth_broker.port, username, creds.secrets[username], **kw)
        reason = peer.connect()
        assert not reason.is_failure, f"{username} refused: {reason}"
        return peer

    return connect


def _refused(reason: mqtt.ReasonCode) -> bool:
    return reason.is_failure and str(reason) in ("Not authorized", "Bad user name or password")


# --- authentication ------------------------------------------------------------------------------


def test_only_a_known_user_with_its_secret_may_connect(auth_broker, creds, peers) -> None:
    """Wrong secret, unknown user and no credentials are refused; the right secret is accepted."""
    port = auth_broker.port
    assert _refused(peers(port, "agt_1", "not-the-secret").connect())
    assert _refused(peers(port, "agt_404", creds.secrets["agt_1"]).connect())
    assert _refused(peers(port).connect())
    assert _refused(peers(port, "agt_1", "").connect())
    assert not peers(port, "agt_1", creds.secrets["agt_1"]).connect().is_failure


def test_rotated_secret_disconnects_the_client_and_refuses_the_old_secret(
    auth_broker, creds, login, peers
) -> None:
    """A rotation takes effect at once: the connected client is dropped without its will,
    its old secret is refused, the new one works, and other users stay connected."""
    old = creds.secrets["agt_1"]
    watcher = login(SERVICE)
    assert watcher.subscribe("agents/#")
    agent = login("agt_1", will=("agents/agt_1/presence", b"offline"))
    bystander = login("agt_2")

    creds.set_users(*creds.secrets, rotate=("agt_1",))

    assert agent.disconnected.wait(RELOAD_TIMEOUT), "client with a rotated secret still connected"
    assert _refused(peers(auth_broker.port, "agt_1", old).connect())
    assert not peers(auth_broker.port, "agt_1", creds.secrets["agt_1"]).connect().is_failure
    # The bystander still publishes; its message comes after any will the kick could have sent.
    bystander.publish("agents/agt_2/presence", b"online")
    got = watcher.received_until("agents/agt_2/presence")
    assert got == [("agents/agt_2/presence", b"online")], "the revoked client's will was published"
    assert not bystander.disconnected.is_set()


def test_removed_user_is_disconnected(auth_broker, creds, login, peers) -> None:
    """Removing a user from the password file disconnects its clients and refuses new ones."""
    agent = login("agt_2")
    secret = creds.secrets["agt_2"]
    creds.set_users(SERVICE, ADMIN, "agt_1", "agt_3")
    assert agent.disconnected.wait(RELOAD_TIMEOUT)
    assert _refused(peers(auth_broker.port, "agt_2", secret).connect())


def test_password_file_missing_then_appearing(tmp_path, peers) -> None:
    """While the password file is missing everyone is refused; once written, logins work (no restart)."""
    files = Creds(tmp_path)
    files.set_acl(ACL)
    broker = EmbeddedBroker(password_file=files.password_file, acl_file=files.acl_file)
    broker.start()
    try:
        assert _refused(peers(broker.port, "agt_1", "anything").connect())
        files.set_users("agt_1")  # checked at every CONNECT, so the next one sees it
        assert not peers(broker.port, "agt_1", files.secrets["agt_1"]).connect().is_failure
    finally:
        broker.stop()


def test_slow_hash_is_verified_off_the_loop_and_cached(tmp_path, peers) -> None:
    """A costly PBKDF2 entry (300,000 iterations, ~0.5 s here) is verified in a thread and
    only once: the broker keeps acknowledging publishes meanwhile, and a reconnect is cheap."""
    files = Creds(tmp_path)
    files.set_users(SERVICE)  # first, so that only "slow" gets the costly hash
    files.set_users(SERVICE, "slow", iterations=300_000)
    files.set_acl(ACL)
    broker = EmbeddedBroker(password_file=files.password_file, acl_file=files.acl_file)
    broker.start()
    try:
        service = peers(broker.port, SERVICE, files.secrets[SERVICE])
        assert not service.connect().is_failure
        logins: queue.Queue[tuple[float, bool]] = queue.Queue()

        def slow_login() -> None:
            started = time.monotonic()
            reason = peers(broker.port, "slow", files.secrets["slow"]).connect()
            logins.put((time.monotonic() - started, not reason.is_failure))

        threading.Thread(target=slow_login, daemon=True).start()
        latencies = []
        while logins.empty():
            started = time.monotonic()
            service.publish("probe/tick", b"")
            latencies.append(time.monotonic() - started)
        first, accepted = logins.get()
        assert accepted
        started = time.monotonic()
        assert not peers(broker.port, "slow", files.secrets["slow"]).connect().is_failure
        again = time.monotonic() - started
        # Verified on the loop, one PUBACK would wait for the whole verification.
        assert max(latencies) < first / 2, (max(latencies), first)
        assert again < first / 2, (again, first)
    finally:
        broker.stop()


# --- topics ----------------------------------------------------------------------------------------


def test_agent_may_not_subscribe_or_publish_outside_its_topics(login) -> None:
    """A plain agent gets SUBACK 0x80 outside agents/<own id>/#, and its forbidden publishes
    are acknowledged but never reach even a subscriber allowed to read everything."""
    service = login(SERVICE)
    assert service.subscribe("#")
    agent = login("agt_1")
    for forbidden in ("agents/agt_2/#", "orders/#", "#", "agents/+/assigned", "agents/#"):
        assert not agent.subscribe(forbidden), forbidden
    assert agent.subscribe("agents/agt_1/#")

    agent.publish("orders/new", b"forged order")
    agent.publish("agents/agt_2/presence", b"impersonation")
    agent.publish("agents/agt_1/assigned", b"forged worklist")  # it may read that topic, not write it
    agent.publish("agents/agt_1/presence", b"online")  # the marker: allowed
    assert service.received_until("agents/agt_1/presence") == [("agents/agt_1/presence", b"online")]


def test_broad_subscription_never_delivers_a_forbidden_topic(login) -> None:
    """agt_7 may subscribe to agents/# (ACL: read agents/#, deny agents/agt_2/#) but is never
    handed agents/agt_2/... on it, nor orders; the narrower forbidden filters get 0x80."""
    lead = login("agt_7")
    assert not lead.subscribe("agents/agt_2/#")
    assert not lead.subscribe("orders/#")
    assert lead.subscribe("agents/#")
    service = login(SERVICE)
    service.publish("agents/agt_2/assigned", b"agent 2's worklist")
    service.publish("orders/new", b"an order")
    service.publish("agents/agt_3/assigned", b"agent 3's worklist")
    assert lead.received_until("agents/agt_3/assigned") == [("agents/agt_3/assigned", b"agent 3's worklist")]

    assert service.subscribe("agents/#")
    lead.publish("agents/agt_2/presence", b"impersonation")
    lead.publish("agents/agt_7/presence", b"online")
    assert service.received_until("agents/agt_7/presence") == [("agents/agt_7/presence", b"online")]


def _drain(peer: Peer) -> list[str]:
    topics = []
    while not peer.messages.empty():
        topics.append(peer.messages.get_nowait().topic)
    return topics


def test_retained_message_of_another_agent_never_reaches_an_agent(login) -> None:
    """With a service client holding '#', amqtt replays on CONNECT every retained message
    matching *any* client's filter; the delivery gate still keeps agent 2's worklist from agent 1."""
    service = login(SERVICE)
    assert service.subscribe("#")
    service.publish("agents/agt_2/assigned", b"agent 2's worklist", retain=True)
    service.publish("agents/agt_1/assigned", b"agent 1's worklist", retain=True)

    agent = login("agt_1")
    assert agent.subscribe("agents/agt_1/#")
    # amqtt sends a subscription's retained messages after its SUBACK and waits for their
    # PUBACKs before it reads the next SUBSCRIBE; paho acknowledges after on_message. So
    # once this second SUBACK is in, every retained message for the first is in the queue.
    assert agent.subscribe("agents/agt_1/presence")
    topics = _drain(agent)
    assert "agents/agt_1/assigned" in topics
    assert set(topics) == {"agents/agt_1/assigned"}, topics


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(
    client_id: str, username: str, password: str, will: tuple[str, bytes] | None = None
) -> bytes:
    def field(value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return len(raw).to_bytes(2, "big") + raw

    flags = 0xC2 | (0x0C if will else 0)  # username, password, clean session; will at QoS 1
    body = field("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + field(client_id)
    if will:
        body += field(will[0]) + field(will[1])
    body += field(username) + field(password)
    return b"\x10" + _remaining_length(len(body)) + body


def _raw_login(port: int, packet: bytes) -> tuple[socket.socket, int]:
    """A bare TCP client: sends CONNECT, returns the socket and CONNACK's return code."""
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.sendall(packet)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        assert chunk, "connection closed before CONNACK"
        connack += chunk
    return sock, connack[3]


def test_will_on_a_forbidden_topic_is_dropped(login, auth_broker, creds) -> None:
    """As Mosquitto: a will on a topic the client may not write is accepted at CONNECT and
    never published; an allowed will is."""
    service = login(SERVICE)
    assert service.subscribe("#")
    forger, code = _raw_login(
        auth_broker.port,
        _connect_packet("forger", "agt_2", creds.secrets["agt_2"], ("orders/new", b"forged")),
    )
    assert code == 0
    forger.close()  # no DISCONNECT: the broker publishes the will, if any, on reading the EOF
    # The marker client connects after that EOF was sent and goes through a full CONNECT
    # before its own EOF, so the broker reads the forger's EOF first.
    honest, code = _raw_login(
        auth_broker.port,
        _connect_packet("honest", "agt_3", creds.secrets["agt_3"], ("agents/agt_3/presence", b"offline")),
    )
    assert code == 0
    honest.close()
    assert service.received_until("agents/agt_3/presence") == [("agents/agt_3/presence", b"offline")]


def test_acl_reload_and_malformed_acl_keeps_the_last_good_one(auth_broker, creds, login, caplog) -> None:
    """A changed ACL applies without restart, to subscriptions already held too; a malformed
    one is logged with its line and the last good one stays in force."""
    caplog.set_level(logging.INFO, logger="broker")
    agent = login("agt_2")
    assert agent.subscribe("agents/agt_2/#")
    assert not agent.subscribe("orders/#")
    granted = ACL + "user agt_2\ntopic read orders/#\n"
    creds.set_acl(granted)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while not agent.subscribe("orders/#"):
        assert time.monotonic() < deadline, "new ACL not applied"
        time.sleep(0.1)

    malformed = granted + "bogus line\n"
    creds.set_acl(malformed)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while "keeping the last good ACL" not in caplog.text:
        assert time.monotonic() < deadline, "malformed ACL not reported"
        time.sleep(0.1)
    assert f"line {malformed.splitlines().index('bogus line') + 1}:" in caplog.text
    assert agent.subscribe("orders/+/status")  # still the good ACL

    creds.set_acl(ACL)  # revoked: refused from now on, and nothing more on the subscriptions held
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while agent.subscribe("orders/+/status"):
        assert time.monotonic() < deadline, "ACL revocation not applied"
        time.sleep(0.1)
    _drain(agent)
    service = login(SERVICE)
    service.publish("orders/o-1/status", b"no longer yours")
    service.publish("agents/agt_2/assigned", b"marker")
    assert agent.received_until("agents/agt_2/assigned") == [("agents/agt_2/assigned", b"marker")]


def test_an_acl_change_applies_to_a_topic_already_routed(auth_broker, creds, login, caplog) -> None:
    """The broker remembers each topic's readers; a changed ACL (no subscription changing)
    still decides the next message on a topic routed under the old one."""
    caplog.set_level(logging.INFO, logger="broker")

    def acl_loaded(acl: str) -> None:
        loads = caplog.text.count("MQTT ACL loaded")
        creds.set_acl(acl)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while caplog.text.count("MQTT ACL loaded") == loads:
            assert time.monotonic() < deadline, "the ACL was not reloaded"
            time.sleep(0.1)

    acl_loaded(ACL + "user agt_2\ntopic read orders/#\n")
    agent = login("agt_2")
    assert agent.subscribe("orders/#") and agent.subscribe("agents/agt_2/#")
    service = login(SERVICE)
    service.publish("orders/o-1/status", b"v1")
    service.publish("agents/agt_2/assigned", b"marker 1")
    assert agent.received_until("agents/agt_2/assigned") == [  # positive control: it read the topic
        ("orders/o-1/status", b"v1"),
        ("agents/agt_2/assigned", b"marker 1"),
    ]
    acl_loaded(ACL)  # orders/# no longer readable by agt_2; its subscription stays
    service.publish("orders/o-1/status", b"v2")
    service.publish("agents/agt_2/assigned", b"marker 2")
    assert agent.received_until("agents/agt_2/assigned") == [("agents/agt_2/assigned", b"marker 2")]


# --- load -----------------------------------------------------------------------------------------------


def test_burst_of_500_logins_does_not_stall_live_traffic(auth_broker, creds, login) -> None:
    """500 valid CONNECTs from 20 threads while the service publishes every 10 ms: every
    login is accepted and the subscriber's stream never pauses for a second."""
    agents = [f"agt_{n}" for n in range(1, 51)]
    creds.set_users(SERVICE, ADMIN, *agents)
    dashboard = login(ADMIN)
    assert dashboard.subscribe("orders/#")
    arrivals: list[float] = []
    dashboard.paho.on_message = lambda *_a: arrivals.append(time.monotonic())
    service = login(SERVICE)
    stop = threading.Event()

    def stream() -> None:
        while not stop.wait(0.01):
            service.paho.publish("orders/o-1/status", b"tick", qos=1)

    def logins(worker: int) -> list[int]:
        codes = []
        for n in range(25):
            username = agents[(worker * 25 + n) % len(agents)]
            packet = _connect_packet(f"burst-{worker}-{n}", username, creds.secrets[username])
            sock, code = _raw_login(auth_broker.port, packet)
            with sock:
                codes.append(code)
                sock.sendall(b"\xe0\x00")  # DISCONNECT
        return codes

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_until(lambda: len(arrivals) >= 5, TIMEOUT, "the stream flowing before the burst")
        results: dict[int, list[int]] = {}
        started = time.monotonic()
        workers = [threading.Thread(target=lambda w=w: results.__setitem__(w, logins(w))) for w in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        burst = time.monotonic() - started
        after = len(arrivals)
        wait_until(lambda: len(arrivals) >= after + 5, TIMEOUT, "the stream flowing after the burst")
    finally:
        stop.set()
        streamer.join(TIMEOUT)

    codes = [code for worker in sorted(results) for code in results[worker]]
    assert codes == [0] * 500, f"{len(codes)} CONNACKs, refused: {sum(c != 0 for c in codes)}"
    during = [t for t in arrivals if started <= t <= started + burst]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    max_gap = max(gaps, default=burst)
    print(f"\n500 logins in {burst:.2f} s; {len(during)} messages meanwhile, max gap {max_gap * 1000:.0f} ms")
    # Measured here: 130-310 ms idle, 600 ms with both cores busy; amqtt itself, not the plugins
    # (an open broker shows the same gaps).
    assert len(during) > 10 and max_gap < 1.5


# --- dev/conformance mode -------------------------------------------------------------------------------


def test_conformance_mode_is_open_except_the_deny_topics(peers) -> None:
    """anonymous=True: no credentials needed, everything allowed except the deny topic,
    which is refused for SUBSCRIBE (0x80) and dropped on PUBLISH."""
    broker = EmbeddedBroker(anonymous=True, deny_topics=("test/nosubscribe",))
    broker.start()
    try:
        watcher = peers(broker.port)
        assert not watcher.connect().is_failure
        assert not watcher.subscribe("test/nosubscribe")
        assert watcher.subscribe("test/#")
        assert watcher.subscribe("orders/#")
        publisher = peers(broker.port, "anyone", "anything")
        assert not publisher.connect().is_failure
        publisher.publish("test/nosubscribe", b"denied")
        publisher.publish("orders/new", b"allowed")
        publisher.publish("test/x", b"marker")
        assert watcher.received_until("test/x") == [("orders/new", b"allowed"), ("test/x", b"marker")]
    finally:
        broker.stop()


def test_files_and_anonymous_mode_do_not_mix(tmp_path) -> None:
    with pytest.raises(ValueError):
        EmbeddedBroker(password_file=tmp_path / "p", acl_file=tmp_path / "a", anonymous=True)
    with pytest.raises(ValueError):
        EmbeddedBroker(password_file=tmp_path / "p")
    with pytest.raises(ValueError):
        EmbeddedBroker(password_file=tmp_path / "p", acl_file=tmp_path / "a", deny_topics=("x",))


# --- amqtt defects these plugins cannot reach ------------------------------------------------------------


def test_refused_connect_with_a_taken_client_id_leaves_the_owner_alone(auth_broker, login, peers) -> None:
    """An unauthenticated CONNECT reusing a connected client's id must not cost it anything."""
    agent = login("agt_1", client_id="agt_1-phone")
    assert agent.subscribe("agents/agt_1/#")
    assert _refused(peers(auth_broker.port, "agt_1", "guess", client_id="agt_1-phone").connect())
    login(SERVICE).publish("agents/agt_1/assigned", b"still yours")
    assert agent.received_until("agents/agt_1/assigned") == [("agents/agt_1/assigned", b"still yours")]
    assert not agent.disconnected.is_set()


def test_no_retained_message_before_subscribing(login) -> None:
    """A client gets retained messages for its own SUBSCRIBEs only, once each."""
    service = login(SERVICE)
    assert service.subscribe("#")
    service.publish("agents/agt_1/assigned", b"agent 1's worklist", retain=True)
    agent = login("agt_1")
    # The CONNECT-time replay is sent before amqtt reads this SUBSCRIBE: its SUBACK bounds it.
    assert agent.subscribe("agents/agt_1/presence")
    assert _drain(agent) == []


# --- python -m broker -----------------------------------------------------------------------------------


def _spawn(env_overrides: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``python -m broker ARGS`` on ports of its own unless ``env_overrides`` name them."""
    port = pick_free_port(HOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
    env.update(ORDERBUS_BROKER_PORT=str(port), ORDERBUS_BROKER_WS_PORT=str(pick_free_port(HOST, avoid=port)))
    env.update(env_overrides)
    return subprocess.Popen(
        [sys.executable, "-m", "broker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def cli_ports() -> dict[str, str]:
    port = pick_free_port(HOST)
    return {
        "ORDERBUS_BROKER_PORT": str(port),
        "ORDERBUS_BROKER_WS_PORT": str(pick_free_port(HOST, avoid=port)),
    }


def _first_connack(port: int, username: str | None, password: str | None, process) -> mqtt.ReasonCode:
    deadline = time.monotonic() + 15  # the child imports amqtt and binds first
    while True:
        assert process.poll() is None, process.communicate()[1]
        peer = Peer(port, username, password)
        try:
            return peer.connect()
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "broker did not start listening"
            time.sleep(0.1)
        finally:
            peer.close()


def test_cli_refuses_logins_until_the_files_appear(tmp_path, cli_ports) -> None:
    """Missing files: the broker starts and refuses everyone; once the service writes them,
    logins succeed without a restart; SIGTERM still exits 0."""
    data_dir = tmp_path / "data"
    process = _spawn({**cli_ports, "ORDERBUS_DATA_DIR": str(data_dir)})
    try:
        port = int(cli_ports["ORDERBUS_BROKER_PORT"])
        assert _refused(_first_connack(port, "agt_1", "x", process))
        files = Creds(data_dir / "mqtt")  # the default <ORDERBUS_DATA_DIR>/mqtt/{passwd,acl}
        files.set_users("agt_1")
        files.set_acl(ACL)
        assert not _first_connack(port, "agt_1", files.secrets["agt_1"], process).is_failure
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=TIMEOUT * 2)
        assert process.returncode == 0, stderr
        assert "missing" in stderr and "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--bogus"], {}, "--bogus"),
        (["--deny-topic", "test/nosubscribe"], {}, "--conformance"),
        ([], {"ORDERBUS_BROKER_CONFORMANCE": "maybe"}, "ORDERBUS_BROKER_CONFORMANCE"),
    ],
)
def test_cli_bad_configuration_is_one_line_and_exit_2(args, env, expected) -> None:
    process = _spawn(env, *args)
    _, stderr = process.communicate(timeout=TIMEOUT * 2)
    assert process.returncode == 2
    assert stderr.startswith("error: ") and expected in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_cli_conformance_mode(cli_ports) -> None:
    """--conformance --deny-topic: anonymous clients connect; the deny topic is refused."""
    process = _spawn(cli_ports, "--conformance", "--deny-topic", "test/nosubscribe")
    try:
        port = int(cli_ports["ORDERBUS_BROKER_PORT"])
        assert not _first_connack(port, None, None, process).is_failure
        peer = Peer(port)
        try:
            assert not peer.connect().is_failure
            assert not peer.subscribe("test/nosubscribe")
            assert peer.subscribe("test/#")
        finally:
            peer.close()
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT * 2)


def test_persistent_session_gets_what_was_published_while_offline(login) -> None:
    """Sessions are not marked anonymous (amqtt's AnonymousAuthPlugin did), so a device with
    a stable client id and clean session off gets its queued messages back on reconnect."""
    device = login("agt_1", client_id="agt_1-phone", clean_session=False)
    assert device.subscribe("agents/agt_1/#")
    device.close()
    login(SERVICE).publish("agents/agt_1/assigned", b"while you were away")
    device = login("agt_1", client_id="agt_1-phone", clean_session=False)
    assert device.received_until("agents/agt_1/assigned") == [
        ("agents/agt_1/assigned", b"while you were away")
    ]


def test_removed_users_persistent_session_queues_nothing(login, creds) -> None:
    """Once a user is removed, nothing more is queued for its offline persistent session
    (it would grow for ever); re-added, it gets only what is published from then on."""
    device = login("agt_1", client_id="agt_1-phone", clean_session=False)
    assert device.subscribe("agents/agt_1/#")
    device.close()
    creds.set_users(SERVICE, ADMIN, "agt_2", "agt_3", "agt_7")
    service = login(SERVICE)  # this CONNECT re-reads the password file
    service.publish("agents/agt_1/assigned", b"for nobody")
    creds.set_users(SERVICE, ADMIN, "agt_1", "agt_2", "agt_3", "agt_7")
    device = login("agt_1", client_id="agt_1-phone", clean_session=False)
    service.publish("agents/agt_1/assigned", b"marker")
    assert device.received_until("agents/agt_1/assigned") == [("agents/agt_1/assigned", b"marker")]
