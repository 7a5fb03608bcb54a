"""The system on a three-node NATS cluster (harness/cluster.py), and a paho device for it.

Each test module that uses :func:`running_cluster` starts its own nodes on free ports and
stops them by pid when it is done. Without the ``cluster`` extra the tests skip (fail
with CI=true).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from contract.link import stop_loop
from harness.cluster import ClusterSystem, NatsMissing, make_cluster_system, nats_binary


def require_nats() -> None:
    try:
        nats_binary()
    except NatsMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def running_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSystem]:
    """The body of a test module's fixture: ``system = pytest.fixture(scope="module")(running_cluster)``."""
    require_nats()
    system = make_cluster_system(tmp_path_factory.mktemp("cluster"))
    try:
        yield system
    finally:
        system.close()


class Device:
    """A paho client on one node (``mqtt://`` or ``ws://`` URL): records CONNACK, SUBACK codes,
    messages and disconnects."""

    def __init__(
        self, url: str, username: str, password: str, *, client_id: str | None = None, clean: bool = True
    ) -> None:
        websocket = url.startswith("ws://")
        host, port = url.removeprefix("ws://" if websocket else "mqtt://").split("/", 1)[0].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or username,
            protocol=mqtt.MQTTv311,
            clean_session=clean,
            transport="websockets" if websocket else "tcp",
        )
        if websocket:
            self.client.ws_set_options(path="/mqtt")
        self.client.username_pw_set(username, password)
        self.connack: mqtt.ReasonCode | None = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.disconnects = 0
        self.dropped = threading.Event()  # set on every disconnect after a CONNACK
        self.subacks: dict[int, list[int]] = {}
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.seen: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = reason_code
        if not reason_code.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self.disconnects += 1
            self.dropped.set()
        self.connected.clear()
        self.answered.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.subacks[mid] = [code.value for code in reason_codes]
            self._cond.notify_all()

    def start(self, timeout: float = 15.0) -> Device:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.answered.wait(timeout), f"no CONNACK from {self.host}:{self.port}"
        return self

    def subscribe(self, topic: str, timeout: float = 15.0) -> int:
        """The SUBACK's return code: 0 or 1 granted, 0x80 refused."""
        _rc, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.subacks, timeout), f"no SUBACK for {topic}"
            return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes, retain: bool = False, timeout: float = 15.0) -> None:
        """QoS 1; returns once acknowledged."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(
        self, topic: str, timeout: float = 15.0, payload: bytes | None = None, contains: bytes = b""
    ) -> mqtt.MQTTMessage:
        """The first message (seen or new) on ``topic`` with that ``payload`` or containing ``contains``."""

        def wanted(message: mqtt.MQTTMessage) -> bool:
            if message.topic != topic or contains not in message.payload:
                return False
            return payload is None or message.payload == payload

        for message in self.seen:
            if wanted(message):
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(message)
            if wanted(message):
                return message
        raise AssertionError(
            f"nothing on {topic} within {timeout} s; seen {sorted({m.topic for m in self.seen})}"
        )

    def drain(self) -> list[mqtt.MQTTMessage]:
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return self.seen

    def wait_disconnected(self, timeout: float = 10.0) -> bool:
        """Whether the broker closed the connection within ``timeout`` seconds (paho reconnects after)."""
        return self.dropped.wait(timeout)

    def stop(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)


def connect_until_accepted(
    url: str, username: str, password: str, timeout: float = 15.0, **options: Any
) -> Device:
    """A device on ``url`` once the node accepts the login (a CONNECT in flight while the nodes
    reload, for a login gone, may be closed once; without the auth callout a login issued a
    moment ago is refused until its node has reloaded)."""
    deadline = time.monotonic() + timeout
    while True:
        device = Device(url, username, password, **options).start()
        if device.connected.is_set() or time.monotonic() > deadline:
            return device
        device.stop()
        time.sleep(0.2)


def bridge_login(system: ClusterSystem, process: str = "webhooks") -> tuple[str, str]:
    """A bridge's login (reads orders/#, agents/#, customers/+/orders, catalog); its bridge is not running."""
    secret = (system.tmp / "var" / "mqtt" / f"{process}-secret").read_text().strip()
    return f"orderbus-{process}", secret
