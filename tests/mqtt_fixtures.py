"""Broker, relay and subscriber fixtures: real amqtt on ephemeral ports, real paho clients.

Every message a :class:`Subscriber` receives is checked against docs/asyncapi.yaml;
a test fails at teardown if any payload broke the contract.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest

from broker.server import EmbeddedBroker
from contract.link import stop_loop
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.outbox.relay import Relay
from order_service.relay import build_relay
from order_service.store.db import db

_ids = itertools.count(1)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict | None:
        return json.loads(self.payload) if self.payload else None

    @property
    def version(self) -> int | None:
        body = self.json
        if body is None:
            return None
        return body["order"]["version"] if "order" in body else body.get("version")


class Subscriber:
    """A paho subscriber that records every message; the test thread asserts on them."""

    def __init__(
        self, host: str, port: int, filters: tuple[str, ...] = ("#",), login: dict | None = None, **client_kw
    ) -> None:
        self.host, self.port, self.filters = host, port, filters
        self.queue: queue.Queue[Received] = queue.Queue()
        self.seen: list[Received] = []
        self.contract_errors: list[str] = []
        self._subscribed = threading.Event()
        transport = client_kw.pop("transport", "tcp")
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_kw.pop("client_id", f"test-sub-{next(_ids)}"),
            transport=transport,
            **client_kw,
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if login is not None:  # a broker login the service issued: {"username", "password", ...}
            self.client.username_pw_set(login["username"], login["password"])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain))
        try:
            from tests.asyncapi import validate_message

            validate_message(received.topic, received.payload)
        except Exception as exc:  # recorded, asserted in the test thread
            self.contract_errors.append(f"{received.topic}: {exc}")
        self.queue.put(received)

    def start(self, timeout: float = 15.0) -> Subscriber:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(timeout), "subscription not acknowledged"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)

    def _pull(self, timeout: float) -> Received | None:
        try:
            received = self.queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        self.seen.append(received)
        return received

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received:
        """The first message (already seen or new) that matches, or an AssertionError."""
        for received in self.seen:
            if predicate(received):
                return received
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            received = self._pull(remaining)
            if received is not None and predicate(received):
                return received
        topics = sorted({r.topic for r in self.seen})
        raise AssertionError(f"no matching message within {timeout} s; topics seen: {topics}")

    def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> list[Received]:
        """Collect until nothing arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pull(quiet) is not None:
            pass
        return self.seen

    def on(self, topic: str) -> list[Received]:
        return [r for r in self.seen if r.topic == topic]

    def latest(self) -> dict[str, Received]:
        """The state a version-keeping client ends up with: the highest version per topic."""
        state: dict[str, Received] = {}
        for r in self.seen:
            current = state.get(r.topic)
            if r.payload == b"":
                state[r.topic] = r
            elif current is None or current.version is None or (r.version or 0) > (current.version or 0):
                state[r.topic] = r
        return state


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def relay_settings(settings_overrides: dict, broker: EmbeddedBroker) -> dict:
    return {
        **settings_overrides,
        "mqtt_url": f"mqtt://{broker.host}:{broker.port}",
        "relay_poll_seconds": 0.5,
    }


class RelayRunner:
    """Relays in threads, as `python -m order_service.relay` runs them."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.running: list[tuple[Relay, threading.Event, threading.Thread]] = []

    def __call__(self, connect: bool = True, **overrides) -> Relay:
        """Start a relay; wait until it is connected (``connect=False``: a standby will not be)."""
        relay = build_relay(load_settings({**self.settings, **overrides}))
        stop = threading.Event()
        thread = threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)
        thread.start()
        assert not connect or relay.connected.wait(10), "relay did not connect"
        self.running.append((relay, stop, thread))
        return relay

    def stop_all(self) -> None:
        for relay, stop, thread in self.running:
            stop.set()
            relay.wake()
            thread.join(10)
            assert not thread.is_alive(), "relay did not stop"
        self.running.clear()


@pytest.fixture
def start_relay(app, relay_settings: dict) -> Iterator[RelayRunner]:
    """Start relays in threads (after the app has migrated the database)."""
    settings = load_settings(relay_settings)
    with db.connection_context():  # what `python -m order_service bootstrap` does
        broker_logins.ensure_service(settings)
        broker_logins.sync_files(settings)
    runner = RelayRunner(relay_settings)
    yield runner
    runner.stop_all()


@pytest.fixture
def relay(start_relay) -> Relay:
    return start_relay()


@pytest.fixture
def subscribe(broker: EmbeddedBroker) -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(*filters: str, **client_kw) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, filters or ("#",), **client_kw).start()
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.stop()
    errors = [e for sub in made for e in sub.contract_errors]
    assert not errors, "payloads that break docs/asyncapi.yaml:\n" + "\n".join(errors)
