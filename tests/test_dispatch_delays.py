"""Late-order alerts: each rule fires once and only once per order, even from concurrent ticks.

The ticks run with a chosen clock (the relay runs the same function every second);
the relay publishes what they write, and an admin subscriber checks the events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

import pytest

from tests.dispatch_helpers import after, history, is_event, patch_settings, run_tick, utc
from tests.helpers import API, get_order, set_status, walk_to

# rule -> (how to get an order into the situation, when the rule becomes due for it)
Setup = Callable[..., tuple[str, datetime]]


def _unconfirmed(client, admin, agent, place_order) -> tuple[str, datetime]:
    order = place_order()
    return order["id"], after(utc(order["status_times"]["placed"]), seconds=300)


def _unassigned(client, admin, agent, place_order) -> tuple[str, datetime]:
    order = walk_to(client, admin, place_order()["id"], "ready")
    assert order["agent_id"] is None
    return order["id"], after(utc(order["status_times"]["ready"]), seconds=300)


def _ready_late(client, admin, agent, place_order) -> tuple[str, datetime]:
    order_id = place_order()["id"]
    order = set_status(client, admin, order_id, "confirmed", prep_minutes=10).json
    order = set_status(client, admin, order_id, "preparing").json
    return order_id, utc(order["promised_at"])


def _delivery_late(client, admin, agent, place_order) -> tuple[str, datetime]:
    order = walk_to(client, admin, place_order()["id"], "picked_up", agent=agent)
    return order["id"], utc(order["eta"])


SETUPS: dict[str, Setup] = {
    "unconfirmed": _unconfirmed,
    "unassigned": _unassigned,
    "ready_late": _ready_late,
    "delivery_late": _delivery_late,
}


@pytest.mark.parametrize("rule", list(SETUPS))
def test_each_delay_rule_fires_once_and_only_once(
    rule, app, client, admin, make_agent, place_order, relay, subscribe
):
    """Not before it is due; once when due, though two ticks race for it; never again after.
    The alert is a history row (system), an order.delayed event naming the rule, and an
    entry in the order's `delays`."""
    watch = subscribe("orders/+/status")
    order_id, due = SETUPS[rule](client, admin, make_agent(), place_order)
    version = get_order(client, admin, order_id)["version"]

    assert run_tick(app, after(due, seconds=-1)).delayed == []

    barrier = threading.Barrier(2)
    reports = []

    def racing_tick() -> None:
        barrier.wait(5)
        reports.append(run_tick(app, after(due, milliseconds=1)))

    threads = [threading.Thread(target=racing_tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(pair for r in reports for pair in r.delayed) == [(order_id, rule)]
    assert run_tick(app, after(due, minutes=5)).delayed == []

    order = get_order(client, admin, order_id)
    assert order["version"] == version + 1 and list(order["delays"]) == [rule]
    rows = [h for h in history(client, admin, order_id) if h["event"] == "order.delayed"]
    assert len(rows) == 1
    assert (rows[0]["actor_role"], rows[0]["from_status"], rows[0]["to_status"]) == (
        "system",
        order["status"],
        order["status"],
    )
    assert rows[0]["reason"].startswith(f"{rule}:")
    event = watch.wait_for(is_event(f"orders/{order_id}/status", "order.delayed")).json
    assert event["delay"] == rule and event["order"] == order and event["reason"] == rows[0]["reason"]
    marker = place_order()["id"]  # positive control: published after any second alert
    watch.wait_for(lambda r: r.topic == f"orders/{marker}/status")
    assert len([r for r in watch.seen if r.json and r.json["event"] == "order.delayed"]) == 1


def test_a_rule_does_not_fire_once_the_order_has_moved_on(app, client, admin, make_agent, place_order):
    """An order confirmed in time is never `unconfirmed`; one ready in time never `ready_late`;
    one with an agent never `unassigned`; one delivered never `delivery_late`."""
    agent = make_agent()
    order = place_order()
    placed = utc(order["status_times"]["placed"])
    walk_to(client, admin, order["id"], "delivered", agent=agent)
    for minutes in (6, 30, 120, 24 * 60):
        assert run_tick(app, after(placed, minutes=minutes)).delayed == []
    assert get_order(client, admin, order["id"])["delays"] == {}


def test_thresholds_are_settings(app, client, admin, place_order):
    """delay_unconfirmed_seconds moves the threshold; 0 turns the rule off."""
    patch_settings(client, admin, delay_unconfirmed_seconds=60)
    order = place_order()
    placed = utc(order["status_times"]["placed"])
    assert run_tick(app, after(placed, seconds=61)).delayed == [(order["id"], "unconfirmed")]
    patch_settings(client, admin, delay_unconfirmed_seconds=0)
    other = place_order()
    assert run_tick(app, after(placed, hours=5)).delayed == []
    assert client.get(f"{API}/orders/{other['id']}", headers=admin.headers).json["delays"] == {}
