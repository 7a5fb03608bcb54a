"""The relay's publishing path: streamed batches, and timers that never hold up a publish."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from broker.server import EmbeddedBroker
from contract.link import WINDOW, BrokerAddress, MqttLink, stop_loop
from order_service.dispatch import auto as dispatch
from order_service.outbox.relay import Relay
from order_service.store.db import db, is_sqlite
from tests.test_relay import _body


class Stop(Exception):
    pass


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """The broker with its default queue limits, which hold the whole stream: it takes the
    relay's stream faster than this process's subscriber reads it."""
    instance = EmbeddedBroker()
    instance.start()
    yield instance
    instance.stop()


def test_a_long_batch_streams_and_checks_the_lock_as_it_goes(broker, relay, subscribe):
    """publish_batch sends more than its window in one stream, in order, and runs its check
    every ``check_every`` messages: a check that fails stops the batch there."""
    base = secrets.randbits(32) << 16  # order ids of this test only: ord_ + 12 hex digits
    topics = [f"orders/ord_{base + i:012x}/status" for i in range(2 * WINDOW + 500)]
    live = subscribe("orders/+/status")
    link = MqttLink(relay.address, f"stream-{base:x}")
    link.connect()
    try:
        checks = []
        acked = link.publish_batch(
            [(t, b"", False) for t in topics], check=lambda: checks.append(1), check_every=1000
        )
        assert acked == len(topics)
        assert len(checks) == 3  # before messages 0, 1000 and 2000

        calls = []

        def fail_second_time() -> None:
            calls.append(1)
            if len(calls) == 2:
                raise Stop

        with pytest.raises(Stop):
            link.publish_batch([(t, b"", False) for t in topics], check=fail_second_time, check_every=700)
    finally:
        link.close()
    live.settle(quiet=0.5)
    assert broker.dropped_messages == 0
    ours = set(topics)
    got = [r.topic for r in live.seen if r.topic in ours]
    assert got[: len(topics)] == topics
    rest = got[len(topics) :]  # unacknowledged when the check failed: some may be lost with the link
    assert rest == topics[: len(rest)] and len(rest) <= 700  # in order; nothing past the failed check


@pytest.mark.parametrize("order", [[1, 2, 3], [3, 2, 1], [2, 3, 1]])
def test_waiting_for_a_batch_ends_with_its_acknowledgements_in_any_order(order):
    """The wait for a whole batch is woken by its last PUBACK (brokers acknowledge in
    order); acknowledgements out of order still end it at once, not at the timeout."""
    link = MqttLink(BrokerAddress.parse("mqtt://127.0.0.1:1"), "no-connection")
    outstanding = deque([1, 2, 3])

    def acknowledge() -> None:
        for mid in order:
            time.sleep(0.05)  # deliberate: acknowledgements trickle in, one by one
            link._handle_publish(None, None, mid, None, None)

    acker = threading.Thread(target=acknowledge)
    started = time.monotonic()
    acker.start()
    try:
        assert link._await_acks(outstanding, 0, timeout=5) == 3
    finally:
        acker.join()
    assert not outstanding and time.monotonic() - started < 2


def test_a_slow_dispatch_tick_does_not_hold_up_publishing(client, admin, start_relay, subscribe, monkeypatch):
    """The dispatch timers run beside the publishing loop: an order committed while a tick is
    still running reaches subscribers at once, not after the tick."""
    ticking = threading.Event()
    real_tick = dispatch.tick

    def slow_tick(settings, now=None):
        report = real_tick(settings, now)
        ticking.set()
        time.sleep(3)  # the behaviour under test: a tick that takes 3 s
        return report

    monkeypatch.setattr(dispatch, "tick", slow_tick)
    start_relay(dispatch_tick_seconds=0.2)
    assert ticking.wait(10)
    ticking.clear()
    assert ticking.wait(10)  # a tick has just started its 3 s
    live = subscribe("orders/+/status")
    started = time.monotonic()
    order = client.post("/api/v1/orders", json=_body(), headers=admin.headers).json
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == order["id"], timeout=2.5)
    assert time.monotonic() - started < 2.5


def test_only_the_relays_own_commits_skip_the_fsync(client, admin, start_relay, subscribe, monkeypatch):
    """SQLite: the publishing thread marks rows published with synchronous=NORMAL on its own
    connection; every other connection (orders, the timers) keeps the configured FULL, and
    the relay's connection goes back to the pool with FULL when the relay stops."""
    if not is_sqlite():
        pytest.skip("synchronous is SQLite's")
    normal, full = 1, 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL
    seen = []
    original = Relay._lazy_commits

    def spy(self: Relay, on: bool) -> None:
        original(self, on)
        seen.append((on, db.execute_sql("PRAGMA synchronous").fetchone()[0]))

    monkeypatch.setattr(Relay, "_lazy_commits", spy)
    start_relay()
    live = subscribe("orders/+/status")
    order = client.post("/api/v1/orders", json=_body(), headers=admin.headers).json
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == order["id"], timeout=5)
    with db.connection_context():
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == full
    start_relay.stop_all()
    assert seen == [(True, normal), (False, full)]
    pooled = [conn for _, _, conn in db.obj._connections]
    assert pooled and all(conn.execute("PRAGMA synchronous").fetchone()[0] == full for conn in pooled)


class _EndsAtTheCheck(threading.Thread):
    """paho's network thread ending by itself exactly between loop_stop's ``_thread is None``
    check and its ``join`` (it sets ``client._thread`` to None as it ends)."""

    def __init__(self, client: mqtt.Client) -> None:
        super().__init__()
        self.client = client

    def __ne__(self, other: object) -> bool:  # loop_stop's "is it my own thread?"
        self.client._thread = None
        return True


def test_stopping_a_link_whose_network_thread_just_ended_is_not_an_error():
    """paho 2.2's loop_stop raises AttributeError when its thread ends between its check and
    its join (eclipse-paho/paho.mqtt.python#872): the relay's link (``stop_loop``) must not."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client._thread = _EndsAtTheCheck(client)
    with pytest.raises(AttributeError):  # positive control: paho's own loop_stop meets the race
        client.loop_stop()
    client._thread = _EndsAtTheCheck(client)
    stop_loop(client)
    assert client._thread is None
    client._thread = None
    stop_loop(client)  # no loop at all: nothing to stop
