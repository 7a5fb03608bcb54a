"""The customer's view of its courier (issue 19, items 2 and 4): the feed entry of its order
carries the courier's position only while the order is picked up, and only the courier
carrying it; the ETA follows the courier's real position; the order's trail over REST.
Real broker (embedded), real relay, real SQLite; the courier's device is a paho client."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

from tests.dispatch_helpers import patch_settings
from tests.helpers import walk_to
from tests.location_helpers import Reporter

DESTINATION = {"lat": 52.55, "lon": 13.40}
BEFORE_PICKUP, NEAR, NEARER, ELSEWHERE, AFTER = 52.520, 52.540, 52.5402, 48.85, 52.549


def _eta(order: dict) -> datetime:
    return datetime.fromisoformat(order["eta"].replace("Z", "+00:00"))


def test_the_customer_sees_its_courier_only_while_picked_up_and_the_eta_follows_it(
    client, admin, make_agent, make_customer, place_order, broker, start_relay, subscribe
):
    start_relay(location_min_interval_seconds=0)
    patch_settings(client, admin, origin_lat=52.50, origin_lon=13.40, travel_speed_kmh=20)
    sam, other = make_agent("sam"), make_agent()
    customer, neighbour = make_customer(), make_customer()
    order = place_order(customer, delivery_location=DESTINATION)
    theirs = place_order(neighbour, delivery_location=DESTINATION)
    feed = subscribe(f"customers/{customer.user_id}/orders")
    status = subscribe(f"orders/{order['id']}/status")
    positions = subscribe("agents/+/location")
    device = Reporter(broker.host, broker.port, sam.agent_id)
    elsewhere = Reporter(broker.host, broker.port, other.agent_id)
    trail = f"/api/v1/orders/{order['id']}/trail"

    stamps = itertools.count(int(time.time()) - 60)  # each report newer than the last

    def report(reporter: Reporter, agent_id: str, lat: float) -> None:
        stamp = reporter.report(lat, 13.40, next(stamps))
        positions.wait_for(lambda m: m.topic == f"agents/{agent_id}/location" and m.json["tst"] == stamp, 15)

    def newest_feed(predicate) -> dict:
        message = feed.wait_for(lambda m: predicate(m.json["orders"][0]), timeout=15)
        return message.json["orders"][0]

    try:
        walk_to(client, admin, order["id"], "ready", sam)
        walk_to(client, admin, theirs["id"], "picked_up", other)
        report(device, sam.agent_id, BEFORE_PICKUP)  # not picked up yet: nothing for the customer
        assert client.get(trail, headers=customer.headers).status_code == 403
        assert client.get(trail, headers=admin.headers).json == {"order_id": order["id"], "points": []}

        walk_to(client, admin, order["id"], "picked_up", sam)
        picked = newest_feed(lambda o: o["status"] == "picked_up")
        assert picked["courier"]["first_name"] == "Sam"
        assert picked["courier"]["location"]["lat"] == BEFORE_PICKUP  # the last position it holds
        first_eta = _eta(picked)

        report(elsewhere, other.agent_id, ELSEWHERE)  # another courier, another customer's order
        sent = time.monotonic()
        report(device, sam.agent_id, NEAR)  # 1.1 km from the door: the ETA moves forward
        moved = status.wait_for(lambda m: m.json["event"] == "order.updated", timeout=15).json["order"]
        assert _eta(moved) < first_eta
        near = newest_feed(lambda o: (o["courier"] or {}).get("location", {}).get("lat") == NEAR)
        took = [(time.monotonic() - sent) * 1000]
        assert near["eta"] == moved["eta"]
        sent = time.monotonic()
        report(device, sam.agent_id, NEARER)  # 20 m more: the position moves, the ETA does not
        nearer = newest_feed(lambda o: (o["courier"] or {}).get("location", {}).get("lat") == NEARER)
        took.append((time.monotonic() - sent) * 1000)
        print(f"report -> customer's feed: {took[0]:.0f} ms (new ETA), {took[1]:.0f} ms (position only)")
        assert nearer["eta"] == moved["eta"]
        assert [m.json["event"] for m in status.settle()].count("order.updated") == 1

        points = client.get(trail, headers=customer.headers)
        assert points.status_code == 200
        assert [p["lat"] for p in points.json["points"]] == [NEAR, NEARER]
        assert client.get(trail, headers=admin.headers).json == points.json
        assert client.get(trail, headers=neighbour.headers).status_code == 404
        assert client.get(trail, headers=sam.headers).status_code == 403

        walk_to(client, admin, order["id"], "delivered", sam)
        newest_feed(lambda o: o["status"] == "delivered")
        report(device, sam.agent_id, AFTER)  # positive control: the position is still published
        assert client.get(trail, headers=customer.headers).status_code == 403
        assert len(client.get(trail, headers=admin.headers).json["points"]) == 2

        seen = [o for m in feed.settle() for o in m.json["orders"]]
        shown = {o["courier"]["location"]["lat"] for o in seen if o["courier"] and o["courier"]["location"]}
        assert shown == {BEFORE_PICKUP, NEAR, NEARER}  # never another courier's, never after delivery
        assert all(o["courier"] is None for o in seen if o["status"] != "picked_up")
        versions = [m.json["version"] for m in feed.seen]
        assert versions == sorted(set(versions))  # every message is news for a client
    finally:
        device.close()
        elsewhere.close()
