"""Live location intake (issue 19): devices' reports on the real (embedded) broker, the relay's
location unit, a real SQLite file. A good report becomes the agent's retained
``agents/<id>/location``; a bad one is dropped, counted in /metrics by reason, and never
reaches that topic; a position goes stale without reports and is cleared when the agent
goes offline."""

from __future__ import annotations

import json
import time

from order_service.store.models import Outbox
from tests.dispatch_helpers import Device, wait_presence
from tests.helpers import wait_until
from tests.location_helpers import BERLIN, Reporter, drops, wait_drops

LAT, LON = BERLIN


def _location(agent_id: str):
    topic = f"agents/{agent_id}/location"
    return lambda m: m.topic == topic and m.payload


def test_good_reports_are_retained_and_bad_ones_dropped_and_counted(
    client, admin, make_agent, broker, start_relay, subscribe
):
    start_relay(location_min_interval_seconds=0)
    agent = make_agent()
    topic = f"agents/{agent.agent_id}/location"
    watch = subscribe(topic)
    device = Reporter(broker.host, broker.port, agent.agent_id)
    now = int(time.time())
    bad = [
        b"not json at all",
        b"\xff\xfe\x00",
        b"[52.5, 13.4]",
        json.dumps({"lat": 91, "lon": LON, "tst": now}).encode(),
        json.dumps({"lat": LAT, "lon": -180.5, "tst": now}).encode(),
        json.dumps({"lat": "52.5", "lon": LON, "tst": now}).encode(),
        json.dumps({"lat": True, "lon": LON, "tst": now}).encode(),
        json.dumps({"lat": LAT, "lon": LON}).encode(),
        b'{"lat": NaN, "lon": 13.4, "tst": %d}' % now,
        json.dumps({"lat": LAT, "lon": LON, "tst": now, "batt": 101}).encode(),
        json.dumps({"_type": "waypoint", "lat": LAT, "lon": LON, "tst": now}).encode(),
        json.dumps({"lat": LAT, "lon": LON, "tst": now, "pad": "x" * 3000}).encode(),
        json.dumps({"lat": LAT, "lon": LON, "tst": now + 3600}).encode(),
    ]
    try:
        for payload in bad:
            device.raw(payload)
        good = device.report(LAT, LON, now - 10, batt=77)  # the positive control, sent last
        first = watch.wait_for(_location(agent.agent_id), timeout=15).json
        assert (first["lat"], first["lon"], first["tst"], first["batt"]) == (LAT, LON, good, 77)
        assert first["agent_id"] == agent.agent_id and first["stale"] is False and first["order_ids"] == []
        counted = wait_drops(client, admin, malformed=3, invalid=7, too_large=1, future=1)
        assert sum(counted.values()) == len(bad)
        # OwnTracks' own payload is accepted; one not newer than the position held is not.
        owntracks = {
            "_type": "location",
            "lat": 48.85,
            "lon": 2.35,
            "tst": now,
            "acc": 5,
            "batt": 50,
            "tid": "ab",
        }
        device.raw(json.dumps(owntracks).encode())
        moved = watch.wait_for(lambda m: m.topic == topic and m.json["tst"] == now, timeout=15).json
        assert (moved["lat"], moved["lon"], moved["batt"], moved["acc"]) == (48.85, 2.35, 50, 5)
        device.report(LAT, LON, now - 1)
        wait_drops(client, admin, old=1)
        # Nothing bad ever reached the topic: two messages, both from good reports.
        assert [m.json["tst"] for m in watch.settle() if m.topic == topic] == [good, now]
        late = subscribe(topic)  # the last position is retained
        held = late.wait_for(_location(agent.agent_id), timeout=15)
        assert held.retain and held.json["tst"] == now
        # Replaced positions leave the outbox once published: the newest one stays.
        rows = Outbox.select(Outbox.payload).where(Outbox.topic == topic)
        wait_until(lambda: rows.count() == 1, timeout=15, what="one location row left")
        assert json.loads(rows.get().payload)["tst"] == now
    finally:
        device.close()


def test_reports_closer_than_the_interval_are_throttled(
    client, admin, make_agent, broker, start_relay, subscribe
):
    start_relay(location_min_interval_seconds=3600)
    agent = make_agent()
    watch = subscribe(f"agents/{agent.agent_id}/location")
    device = Reporter(broker.host, broker.port, agent.agent_id)
    try:
        first = device.report(LAT, LON, time.time() - 5)
        device.report(LAT + 0.01, LON, first + 1)
        device.report(LAT + 0.02, LON, first + 2)
        assert wait_drops(client, admin, throttled=2)["throttled"] == 2
        watch.wait_for(lambda m: m.payload, timeout=15)  # the first one, accepted
        assert [m.json["tst"] for m in watch.settle()] == [first]
    finally:
        device.close()


def test_a_position_goes_stale_and_is_cleared_when_the_agent_goes_offline(
    client, admin, make_agent, broker, start_relay, subscribe
):
    start_relay(location_min_interval_seconds=0, location_stale_seconds=1)
    agent = make_agent()
    topic = f"agents/{agent.agent_id}/location"
    watch = subscribe(topic)
    presence = Device(broker, agent.agent_id)
    device = Reporter(broker.host, broker.port, agent.agent_id)
    try:
        presence.online()
        wait_presence(client, admin, agent.agent_id, "online")
        stamp = device.report(LAT, LON)
        fresh = watch.wait_for(lambda m: m.topic == topic and m.payload and not m.json["stale"], timeout=15)
        stale = watch.wait_for(lambda m: m.topic == topic and m.payload and m.json["stale"], timeout=15)
        assert stale.json["tst"] == fresh.json["tst"] == stamp
        assert stale.at - fresh.at >= 0.9  # not before the timeout
        presence.offline()
        watch.wait_for(lambda m: m.topic == topic and m.payload == b"", timeout=15)
        late = subscribe(topic, f"agents/{agent.agent_id}/presence")
        late.wait_for(lambda m: m.topic.endswith("/presence"), timeout=15)  # retained replay done
        late.settle(quiet=0.5)
        assert not [m for m in late.seen if m.topic == topic and m.payload]
        assert drops(client, admin).get("unknown_agent", 0) == 0
    finally:
        device.close()
        presence.close()


def test_a_report_of_an_unknown_agent_is_dropped(client, admin, broker, start_relay, subscribe):
    start_relay(location_min_interval_seconds=0)
    watch = subscribe("agents/+/location")
    device = Reporter(broker.host, broker.port, "agt_000000000000")
    try:
        device.report(LAT, LON)
        wait_drops(client, admin, unknown_agent=1)
        assert watch.settle() == []
    finally:
        device.close()
