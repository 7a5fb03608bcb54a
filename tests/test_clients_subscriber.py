"""clients/subscriber.py: keep the highest version, drop older or duplicate, resync on connect."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt

import contract
from clients.subscriber import Feed, Update, classify
from tests.helpers import wait_until


def _worklist(agent: str, version: int, *order_ids: str) -> dict:
    return {
        "event": "agent.worklist",
        "agent_id": agent,
        "version": version,
        "orders": [{"id": o} for o in order_ids],
    }


def _order(order_id: str, version: int) -> dict:
    return {"event": "order.status_changed", "order": {"id": order_id, "version": version}}


def test_classify_and_tracker():
    assert classify("agents/a1/assigned", _worklist("a1", 3)) == ("worklist", "a1", 3)
    assert classify("orders/o1/status", _order("o1", 2)) == ("order", "o1", 2)
    assert classify("orders/new", _order("o1", 1)) == ("order", "o1", 1)
    assert classify("agents/a1/presence", {"state": "online"})[0] == "presence"
    gate = contract.VersionGate()
    assert gate.offer(("order", "o1"), 2)
    assert not gate.offer(("order", "o1"), 2)
    assert not gate.offer(("order", "o1"), 1)
    assert gate.offer(("order", "o1"), 3) and gate.held(("order", "o1")) == 3
    assert gate.offer(("worklist", "o1"), 1)  # another kind, another key


def _until_marker(feed: Feed, publisher: mqtt.Client, n: int, timeout: float = 5.0) -> list[Update]:
    """Publish marker ``n`` (news on a topic of its own) and return every update up to it:
    what the feed would still put out before the marker has come out by then."""
    topic = "orders/marker/status"
    publisher.publish(topic, json.dumps(_order("marker", n)), qos=1).wait_for_publish(5)
    got: list[Update] = []
    while not got or (got[-1].topic, got[-1].version) != (topic, n):
        update = feed.get(timeout)
        assert update is not None, f"marker {n} not out within {timeout} s; got {got}"
        got.append(update)
    return got[:-1]


def test_feed_on_a_real_broker_drops_older_and_duplicates_and_resyncs(broker):
    """Retained replay, duplicates and an older version published late: only news comes out."""
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        publisher.publish(
            "agents/a1/assigned", json.dumps(_worklist("a1", 2, "o1")), qos=1, retain=True
        ).wait_for_publish(5)
        snapshot = [("agents/a1/assigned", _worklist("a1", 2, "o1"))]  # what a REST resync returns
        resyncs: list[int] = []

        def resync():
            yield from snapshot
            resyncs.append(1)  # after the feed has offered the whole snapshot

        feed = Feed(
            f"mqtt://{broker.host}:{broker.port}",
            ["agents/a1/assigned", "orders/+/status"],
            client_id="test-feed",
            resync=resync,
        )
        subscribed = threading.Event()
        feed.client.on_subscribe = lambda *args: subscribed.set()
        feed.start()
        try:
            assert subscribed.wait(5)  # a marker published before the SUBACK could be missed
            wait_until(lambda: len(resyncs) == 1, 5, "the resync on connect")
            first = _until_marker(feed, publisher, 1)
            assert [(u.kind, u.version) for u in first] == [("worklist", 2)]  # retained + resync: once
            for version in (1, 2, 3, 3):
                publisher.publish(
                    "agents/a1/assigned", json.dumps(_worklist("a1", version, "o1", "o2")), qos=1
                )
            publisher.publish("orders/o1/status", json.dumps(_order("o1", 5)), qos=1).wait_for_publish(5)
            publisher.publish("orders/o1/status", json.dumps(_order("o1", 4)), qos=1)
            publisher.publish("orders/o1/status", b"", qos=1, retain=True).wait_for_publish(5)
            got = _until_marker(feed, publisher, 2)
            assert [(u.kind, u.key, u.version, u.cleared) for u in got] == [
                ("worklist", "a1", 3, False),
                ("order", "o1", 5, False),
                ("order", "o1", None, True),
            ]
            # A reconnect resyncs; nothing new means nothing comes out.
            subscribed.clear()
            feed.client.reconnect()
            assert subscribed.wait(5)  # the retained replay is on its way, ahead of the marker
            wait_until(lambda: len(resyncs) == 2, 5, "the resync after the reconnect")
            assert _until_marker(feed, publisher, 3) == []
        finally:
            feed.stop()
    finally:
        publisher.loop_stop()
        publisher.disconnect()
