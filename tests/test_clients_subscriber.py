"""clients/subscriber.py: keep the highest version, drop older or duplicate, resync on connect."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt

import contract
from clients.subscriber import Feed, Update, classify


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


def _drain(feed: Feed, quiet: float = 0.5) -> list[Update]:
    got = []
    while (update := feed.get(quiet)) is not None:
        got.append(update)
    return got


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
        feed = Feed(
            f"mqtt://{broker.host}:{broker.port}",
            ["agents/a1/assigned", "orders/+/status"],
            client_id="test-feed",
            resync=lambda: snapshot,
        ).start()
        try:
            first = _drain(feed)
            assert [(u.kind, u.version) for u in first] == [("worklist", 2)]  # retained + resync: once
            for version in (1, 2, 3, 3):
                publisher.publish(
                    "agents/a1/assigned", json.dumps(_worklist("a1", version, "o1", "o2")), qos=1
                )
            publisher.publish("orders/o1/status", json.dumps(_order("o1", 5)), qos=1).wait_for_publish(5)
            publisher.publish("orders/o1/status", json.dumps(_order("o1", 4)), qos=1)
            publisher.publish("orders/o1/status", b"", qos=1, retain=True).wait_for_publish(5)
            got = _drain(feed)
            assert [(u.kind, u.key, u.version, u.cleared) for u in got] == [
                ("worklist", "a1", 3, False),
                ("order", "o1", 5, False),
                ("order", "o1", None, True),
            ]
            # A reconnect resyncs; nothing new means nothing comes out.
            feed.client.reconnect()
            time.sleep(0.5)
            assert _drain(feed) == []
        finally:
            feed.stop()
    finally:
        publisher.loop_stop()
        publisher.disconnect()
