"""The embedded broker (broker/): listeners, restart, and the ``python -m broker`` CLI.

Everything runs on ephemeral ports: this machine may run a system Mosquitto on 1883.
Messages go from paho's network thread to a queue; assertions run in the test thread.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import BrokerConfig

from broker import server
from broker.server import BrokerStartError, EmbeddedBroker, build_config, pick_free_port

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 10.0


class Client:
    """A real paho client whose connects and messages land on queues."""

    def __init__(self, port: int, transport: str = "tcp") -> None:
        self.connacks: queue.Queue[mqtt.ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[object] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subscriptions: list[str] = []
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{transport}-{uuid.uuid4().hex[:8]}",
            transport="websockets" if transport == "websockets" else "tcp",
        )
        if transport == "websockets":
            self.paho.ws_set_options(path="/mqtt")  # where mqtt.js connects
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)
        self.paho.on_subscribe = lambda *args: self.subacks.put(args)
        self.port = port

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason, _p: object) -> None:
        # Subscribing here, never waiting: callbacks must not block paho's network thread.
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self.connacks.put(reason)

    def connect(self, *subscriptions: str) -> Client:
        """Connect; with ``subscriptions``, return once each is acknowledged (SUBACK)."""
        self.subscriptions = list(subscriptions)
        self.paho.connect(HOST, self.port)
        self.paho.loop_start()
        reason = self.connacks.get(timeout=TIMEOUT)
        assert not reason.is_failure, f"CONNACK refused: {reason}"
        for _ in subscriptions:
            self.subacks.get(timeout=TIMEOUT)
        return self

    def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool) -> None:
        acked: queue.Queue[int] = queue.Queue()
        self.paho.on_publish = lambda _c, _u, mid, _r, _p: acked.put(mid)
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        assert acked.get(timeout=TIMEOUT) == info.mid  # the broker's PUBACK

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(port: int, transport: str = "tcp") -> Client:
        made.append(Client(port, transport))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_config_has_tcp_default_and_own_ws_listener_without_sys() -> None:
    """The ws listener binds its own port (else it inherits the TCP one), and no $SYS plugin."""
    config = BrokerConfig.from_dict(build_config("127.0.0.1", 18830, 19001))
    assert config.listeners["default"].bind == "127.0.0.1:18830"
    assert config.listeners["default"].type == "tcp"
    assert config.listeners["ws"].bind == "127.0.0.1:19001"
    assert config.listeners["ws"].type == "ws"
    assert not any("sys" in plugin.lower() for plugin in config.plugins)


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_retained_qos1_message_reaches_later_subscriber(broker, clients, transport) -> None:
    """A QoS 1 retained publish over TCP reaches a subscriber connecting afterwards."""
    publisher = clients(broker.port).connect()
    publisher.publish_and_wait("orders/o-1/status", b'{"version": 1}', retain=True)
    publisher.close()

    port = broker.ws_port if transport == "websockets" else broker.port
    subscriber = clients(port, transport).connect("orders/+/status")
    message = subscriber.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload) == ("orders/o-1/status", b'{"version": 1}')
    assert message.retain
    assert message.qos == 1


def test_restart_on_same_ports_serves_again_with_empty_retained_store(broker, clients) -> None:
    """stop() then start() reuses both ports; amqtt keeps no retained message across it."""
    ports = (broker.port, broker.ws_port)
    clients(broker.port).connect().publish_and_wait("orders/o-1/status", b"old", retain=True)

    broker.stop()
    broker.start()

    assert (broker.port, broker.ws_port) == ports
    subscriber = clients(broker.ws_port, "websockets").connect("#")  # subscribed (SUBACK)
    publisher = clients(broker.port).connect()
    publisher.publish_and_wait("probe/after-restart", b"new", retain=False)
    # The marker proves the subscription works; anything retained would have come first.
    message = subscriber.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload) == ("probe/after-restart", b"new")
    publisher.publish_and_wait("probe/after-restart", b"again", retain=False)
    message = subscriber.messages.get(timeout=TIMEOUT)  # nothing came between the two markers
    assert (message.topic, message.payload) == ("probe/after-restart", b"again")


def test_stop_is_prompt_while_a_client_is_subscribing(clients) -> None:
    """stop() returns promptly even when a client's SUBSCRIBE arrives as it starts.

    Regression: amqtt's shutdown() waited for such a client to leave by itself (its
    reader task swallowed the cancellation), so stop() timed out about half the time.
    """
    for _ in range(5):
        broker = EmbeddedBroker()
        broker.start()
        clients(broker.port).connect("orders/#")  # subscribes from on_connect, at once
        started = time.monotonic()
        broker.stop(timeout=TIMEOUT)
        assert time.monotonic() - started < 2.0


def test_stop_is_idempotent_and_frees_both_ports() -> None:
    """After stop() (twice) both ports can be bound again by anyone."""
    broker = EmbeddedBroker()
    broker.start()
    broker.stop()
    broker.stop()
    server.check_ports_free(broker.host, broker.port, broker.ws_port)


def test_start_on_taken_ws_port_names_the_variable_and_releases_tcp_port() -> None:
    """A taken WebSocket port gives a one-line BrokerStartError and leaves no listener open."""
    with socket.create_server((HOST, 0)) as squatter:
        broker = EmbeddedBroker(port=pick_free_port(HOST), ws_port=squatter.getsockname()[1])
        with pytest.raises(BrokerStartError) as raised:
            broker.start()
    message = str(raised.value)
    assert str(broker.ws_port) in message and "ORDERBUS_BROKER_WS_PORT" in message
    assert "\n" not in message
    server.check_ports_free(broker.host, broker.port, broker.ws_port)


def test_port_taken_between_check_and_amqtt_bind_is_explained(monkeypatch) -> None:
    """If amqtt itself fails to bind (a race), the error still names the port, and the
    TCP listener amqtt had already opened is closed again."""
    real_check = server.check_ports_free
    calls: list[int] = []

    def pass_first_check(host: str, port: int, ws_port: int) -> None:
        calls.append(port)
        if len(calls) > 1:
            real_check(host, port, ws_port)

    monkeypatch.setattr(server, "check_ports_free", pass_first_check)
    with socket.create_server((HOST, 0)) as squatter:
        broker = EmbeddedBroker(port=pick_free_port(HOST), ws_port=squatter.getsockname()[1])
        with pytest.raises(BrokerStartError, match="ORDERBUS_BROKER_WS_PORT"):
            broker.start()
    assert len(calls) == 2  # the early check was skipped; amqtt's failure was explained
    real_check(broker.host, broker.port, broker.ws_port)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], subprocess.Popen[str]]]:
    """Start ``python -m broker`` (ports of its own and this test's data directory unless
    ``overrides`` say otherwise); any process still running at teardown is killed by PID."""
    started: list[subprocess.Popen[str]] = []

    def run(overrides: dict[str, str], module: str = "broker") -> subprocess.Popen[str]:
        port = pick_free_port(HOST)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
        env.update(_ports_env(port, pick_free_port(HOST, avoid=port)), ORDERBUS_DATA_DIR=str(tmp_path))
        env.update(overrides)
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)  # reap it and close its pipes


def _ports_env(port: int, ws_port: int) -> dict[str, str]:
    return {"ORDERBUS_BROKER_PORT": str(port), "ORDERBUS_BROKER_WS_PORT": str(ws_port)}


def test_cli_exits_with_one_line_error_when_port_taken(spawn) -> None:
    """A taken TCP port: exit status 2, stderr names the port and variable, no traceback."""
    with socket.create_server((HOST, 0)) as squatter:
        port = squatter.getsockname()[1]
        ws_port = pick_free_port(HOST, avoid=port)
        process = spawn(_ports_env(port, ws_port))
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2
    assert str(port) in stderr and "ORDERBUS_BROKER_PORT" in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_make_runs_restart_loop_gives_up_on_a_taken_port(spawn, tmp_path) -> None:
    """``python -m broker.supervise`` (make run's broker) does not restart a broker that cannot
    start: it exits 2 with the broker's one-line error, so honcho stops and says why."""
    with socket.create_server((HOST, 0)) as squatter:
        port = squatter.getsockname()[1]
        env = {**_ports_env(port, pick_free_port(HOST, avoid=port)), "ORDERBUS_DATA_DIR": str(tmp_path)}
        process = spawn(env, "broker.supervise")
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2
    assert "ORDERBUS_BROKER_PORT" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "broker.pid").exists()


def test_cli_rejects_non_integer_port(spawn) -> None:
    """A non-integer port variable: one-line error naming it, exit status 2."""
    process = spawn({"ORDERBUS_BROKER_WS_PORT": "nine-thousand"})
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2
    assert stderr.startswith("error: ORDERBUS_BROKER_WS_PORT") and "Traceback" not in stderr


def test_cli_serves_then_exits_zero_on_sigterm(spawn, clients) -> None:
    """On free ports the CLI serves TCP and WebSocket clients; SIGTERM stops it with status 0."""
    port = pick_free_port(HOST)
    ws_port = pick_free_port(HOST, avoid=port)
    # Conformance mode: these clients connect without credentials (tests/test_broker_auth.py has the rest).
    process = spawn({**_ports_env(port, ws_port), "ORDERBUS_BROKER_CONFORMANCE": "1"})

    tcp_client = clients(port)
    deadline = time.monotonic() + TIMEOUT
    while True:  # the child needs a moment to import amqtt and bind
        assert process.poll() is None, process.communicate()[1]
        try:  # a real MQTT client: a bare socket probe makes amqtt and websockets log errors
            tcp_client.connect()
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "broker did not start listening"
            time.sleep(0.1)
    clients(ws_port, "websockets").connect()

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    expected = f"MQTT broker listening on mqtt://{HOST}:{port} and ws://{HOST}:{ws_port}/mqtt"
    assert expected in stderr
    assert "Traceback" not in stderr
