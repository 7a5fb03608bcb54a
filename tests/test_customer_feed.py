"""A customer's feed, ``customers/<user id>/orders``: written with every change to the
customer's orders, validated against docs/asyncapi.yaml, and delivered by a real broker
(embedded) through the relay, including after the broker lost its retained store."""

from __future__ import annotations

import contract
from order_service.store.db import db
from order_service.store.models import Outbox
from tests import asyncapi
from tests.helpers import API, assign, set_status, walk_to
from tests.mqtt_fixtures import Received

ALL_STEPS = ["confirmed", "preparing", "ready", "picked_up", "delivered"]


def feed_rows(customer_id: str | None = None) -> list[tuple[str, dict]]:
    """(topic, validated payload) of every customer feed row, in commit order."""
    with db.connection_context():
        rows = Outbox.select().where(Outbox.kind == "customer").order_by(Outbox.id)
        found = [(r.topic, asyncapi.validate_message(r.topic, r.payload.encode())) for r in rows]
    if customer_id is None:
        return found
    return [(t, p) for t, p in found if t == contract.customer_orders(customer_id)]


def courier(client, admin, make_agent, name: str = "Sam Lee"):
    agent = make_agent()
    response = client.patch(f"{API}/agents/{agent.agent_id}", json={"name": name}, headers=admin.headers)
    assert response.status_code == 200, response.json
    return agent


def test_the_feed_follows_an_order_through_every_status(
    client, admin, make_agent, make_customer, place_order
):
    me, other = make_customer(), make_customer()
    sam = courier(client, admin, make_agent)
    mine = place_order(me, customer={"name": "Me", "phone": "+1 555 0100", "address": "1 Main St"})
    theirs = place_order(other)
    place_order()  # an admin's phone order: nobody's feed
    walk_to(client, admin, mine["id"], "delivered", agent=sam)
    feed = [p for _, p in feed_rows(me.user_id)]
    views = [p["orders"][0] for p in feed]
    assert [v["status"] for v in views] == ["placed", "confirmed", "confirmed", *ALL_STEPS[1:]]
    assert all(p["customer_id"] == me.user_id for p in feed)
    assert all([o["id"] for o in p["orders"]] == [mine["id"]] for p in feed)  # never another's order
    versions = [p["version"] for p in feed]
    assert versions == sorted(set(versions)) and versions[0] == 1
    picked = views[ALL_STEPS.index("picked_up") + 2]
    assert picked["courier"] == {"first_name": "Sam", "location": None} and picked["eta"] is not None
    assert all(v["courier"] is None for v in views if v["status"] != "picked_up")
    last = views[-1]
    assert last["status_times"].keys() == {"placed", *ALL_STEPS}
    assert last["customer_address"] == "1 Main St" and last["items"] == mine["items"]
    assert last["total_cents"] == mine["total_cents"] and last["currency"] == mine["currency"]
    assert last["number"] == mine.get("number")  # the catalog's order numbers, when the order has one
    assert [p["orders"][0]["id"] for _, p in feed_rows(other.user_id)] == [theirs["id"]]
    assert {t for t, _ in feed_rows()} == {
        contract.customer_orders(me.user_id),
        contract.customer_orders(other.user_id),
    }


def test_finished_orders_say_why_and_the_newest_come_first(
    client, admin, make_agent, make_customer, place_order
):
    me = make_customer()
    sam = courier(client, admin, make_agent)
    cancelled = place_order(me)["id"]
    response = set_status(client, me, cancelled, "cancelled", reason="changed my mind")
    assert response.status_code == 200, response.json
    failed = place_order(me)["id"]
    walk_to(client, admin, failed, "failed", agent=sam)
    live = place_order(me)["id"]
    assert assign(client, admin, live, sam.agent_id).status_code == 409  # placed: not assignable yet
    _, last = feed_rows(me.user_id)[-1]
    assert [o["id"] for o in last["orders"]] == [live, failed, cancelled]
    by_id = {o["id"]: o for o in last["orders"]}
    assert by_id[cancelled]["reason"] == "changed my mind" and by_id[cancelled]["failure"] is None
    assert by_id[failed]["failure"] == {"reason": "customer_absent", "note": ""}
    assert by_id[failed]["reason"] and by_id[failed]["courier"] is None
    assert by_id[live]["reason"] is None and by_id[live]["status"] == "placed"


def _feed_of(customer_id: str):
    topic = contract.customer_orders(customer_id)
    return lambda r: r.topic == topic


def _at_status(customer_id: str, order_id: str, status: str):
    def matches(r: Received) -> bool:
        body = r.json
        return (
            r.topic == contract.customer_orders(customer_id)
            and body is not None
            and any(o["id"] == order_id and o["status"] == status for o in body["orders"])
        )

    return matches


def test_a_subscriber_sees_every_status_live_and_the_feed_survives_a_broker_restart(
    client, admin, make_agent, make_customer, place_order, broker, relay, subscribe
):
    me, other = make_customer(), make_customer()
    sam = courier(client, admin, make_agent)
    watcher = subscribe(contract.customer_orders(me.user_id))  # contract-checked (see mqtt_fixtures)
    order = place_order(me)["id"]
    place_order(other)
    watcher.wait_for(_at_status(me.user_id, order, "placed"), timeout=15)
    for status in ALL_STEPS:
        walk_to(client, admin, order, status, agent=sam)
        seen = watcher.wait_for(_at_status(me.user_id, order, status), timeout=15)
        carrier = {"first_name": "Sam", "location": None} if status == "picked_up" else None
        assert seen.json["orders"][0]["courier"] == carrier
    versions = [r.version for r in watcher.seen]
    assert versions == sorted(versions) and len(set(versions)) >= len(ALL_STEPS) + 1
    assert {r.topic for r in watcher.seen} == {contract.customer_orders(me.user_id)}
    final = watcher.seen[-1].json

    broker.stop()
    broker.start()  # empty: the embedded broker keeps nothing across a restart
    waiting = subscribe(contract.CUSTOMER_ORDERS_FILTER)  # sees the relay republish it, live
    waiting.wait_for(lambda r: _feed_of(me.user_id)(r) and r.version == final["version"], timeout=20)
    late = subscribe(contract.CUSTOMER_ORDERS_FILTER)  # after that: the broker's retained state
    back = late.wait_for(_feed_of(me.user_id), timeout=20)
    assert back.retain and back.json["version"] == final["version"]
    assert back.json["orders"] == final["orders"]
    assert late.wait_for(_feed_of(other.user_id), timeout=20).retain
