"""The relay's recheck: after an acknowledgement that stalled, or a reconnect, it republishes
the state of what changed in its window (``ORDERBUS_RELAY_RECHECK_SECONDS``).

Why: a NATS node acknowledges a retained QoS 1 publish even when its replicated store failed
to keep it (docs/scaling.md); such a failure stalls the acknowledgements (the store's 5 s
timeout) or comes with a lost connection. Here the stall is made by a proxy that stops
carrying the relay's connection for a few seconds, on the embedded broker (a stall is a
stall; the cluster's chaos tests show the whole fault healed).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import contract
from order_service.config import Settings
from order_service.outbox.recheck import RecheckWindow
from tests.helpers import all_published, set_status, wait_until
from tests.tcp_proxy import TcpProxy

STALL = 3.0  # seconds the proxy holds the relay's traffic (over the relay's 2 s threshold)


@pytest.fixture
def proxy(broker):
    made = TcpProxy(broker.host, broker.port).start()
    yield made
    made.stop()


def _stalled_change(client, admin, proxy: TcpProxy, order_id: str) -> None:
    """Confirm the order while the proxy holds the relay's traffic for STALL seconds."""
    proxy.pause()
    resume = threading.Timer(STALL, proxy.resume)
    resume.start()
    try:
        set_status(client, admin, order_id, "confirmed")
    finally:
        resume.join()


def test_a_stalled_acknowledgement_makes_the_relay_republish_its_window(
    client, admin, place_order, broker, proxy, start_relay, subscribe
):
    """Two orders changed within the window; the second's acknowledgement stalls 3 s: the
    relay sends both orders' current state again (a dashboard sees each version twice)."""
    relay = start_relay(
        mqtt_url=f"mqtt://127.0.0.1:{proxy.port}", relay_recheck_seconds=30, mqtt_keepalive=30
    )
    first, second = place_order(), place_order()
    wait_until(all_published, 10, "the orders published")  # then subscribed: each v1 retained, once
    watcher = subscribe("orders/+/status")
    topics = [contract.order_status(o["id"]) for o in (first, second)]
    for topic in topics:
        watcher.wait_for(lambda r, t=topic: r.topic == t and r.version == 1)
    _stalled_change(client, admin, proxy, second["id"])
    wait_until(lambda: relay.rechecks >= 1, 15, "the relay rechecked after the stall")
    watcher.wait_for(lambda r: r.topic == topics[1] and r.version == 2)
    watcher.settle(quiet=1.0)
    # Both orders changed within the window: both republished, each at its newest version.
    assert [r.version for r in watcher.on(topics[0])] == [1, 1]
    assert [r.version for r in watcher.on(topics[1])] == [1, 2, 2]
    assert relay.republished == 0, "the recheck is not a rehydration"


def test_without_a_window_a_stall_republishes_nothing(
    client, admin, place_order, broker, proxy, start_relay, subscribe
):
    """The same stall with ``relay_recheck_seconds=0`` (the default on one broker): each
    version once. Positive control: the stalled change itself arrives."""
    relay = start_relay(mqtt_url=f"mqtt://127.0.0.1:{proxy.port}", relay_recheck_seconds=0, mqtt_keepalive=30)
    order = place_order()
    topic = contract.order_status(order["id"])
    wait_until(all_published, 10, "the order published")
    watcher = subscribe(topic)
    watcher.wait_for(lambda r: r.version == 1)
    _stalled_change(client, admin, proxy, order["id"])
    watcher.wait_for(lambda r: r.version == 2)
    watcher.settle(quiet=1.0)
    assert [r.version for r in watcher.on(topic)] == [1, 2]
    assert relay.rechecks == 0


def test_a_reconnect_makes_the_relay_republish_its_window(
    client, admin, place_order, broker, proxy, start_relay, subscribe
):
    """The relay's connection is reset (the proxy drops it): once reconnected, it sends the
    state changed within the window again; the catch-up alone would send nothing (the broker
    kept its retained state)."""
    relay = start_relay(mqtt_url=f"mqtt://127.0.0.1:{proxy.port}", relay_recheck_seconds=30)
    # The first catch-up over (its marker acknowledged): a drop during it would leave the broker
    # without a marker, and the reconnect would republish everything rather than recheck.
    wait_until(lambda: relay.catch_ups, 10, "the relay's first catch-up")
    order = place_order()
    topic = contract.order_status(order["id"])
    wait_until(all_published, 10, "the order published")
    watcher = subscribe(topic)
    watcher.wait_for(lambda r: r.version == 1)
    catch_ups = relay.catch_ups
    proxy.drop()
    wait_until(lambda: relay.catch_ups > catch_ups, 15, "the relay reconnected and caught up")
    watcher.wait_for(lambda r: r.version == 1 and not r.retain)  # sent again, live
    assert relay.rechecks == 1 and relay.republished == 0


def test_the_window_is_on_by_default_only_with_brokers_to_fail_over_to(tmp_path: Path):
    """Settings: 30 s on a cluster (its other nodes are failover brokers), 0 on one broker, and
    ORDERBUS_RELAY_RECHECK_SECONDS wins over both."""
    base = {"data_dir": tmp_path, "broker_port": 21883}
    assert Settings(**base, cluster_nodes=3).relay_recheck_window == 30  # type: ignore[arg-type]
    assert Settings(**base).relay_recheck_window == 0  # type: ignore[arg-type]
    chosen = Settings(**base, cluster_nodes=3, relay_recheck_seconds=5)  # type: ignore[arg-type]
    assert chosen.relay_recheck_window == 5


def test_the_window_keeps_only_its_own_seconds():
    """What the relay remembers is bounded by the window, however long it has run: batches
    older than it are forgotten as new ones come, and since() starts at the oldest kept."""
    window = RecheckWindow(0.2)
    for after in range(1000):
        window.acknowledged(after)
    assert len(window) == 1000 and window.since() == 0  # all within 0.2 s
    time.sleep(0.3)
    window.acknowledged(1000)
    assert len(window) == 1 and window.since() == 1000
    off = RecheckWindow(0)
    off.acknowledged(1)
    assert not off and len(off) == 0 and off.since() is None
