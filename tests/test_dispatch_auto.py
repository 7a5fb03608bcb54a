"""Auto-assignment over the real service, broker and relay, with agents' devices online or not.

The relay runs the dispatch tick (every 0.2 s here); devices announce presence on
their own ``agents/<id>/presence``. Policy (order_service/dispatch.py): least load
(active orders + pending offers) first, ties by longest idle, under a per-agent cap.
"""

from __future__ import annotations

import time

import pytest

from tests.dispatch_helpers import (
    Device,
    a_tick_has_run,
    decline,
    ids,
    is_event,
    patch_settings,
    wait_presence,
    worklist_where,
)
from tests.helpers import API, assign, get_order, set_status, walk_to


@pytest.fixture
def devices(broker):
    made: list[Device] = []

    def connect(agent) -> Device:
        device = Device(broker, agent.agent_id)
        made.append(device)
        return device

    yield connect
    for device in made:
        device.close()


@pytest.fixture
def fast_relay(start_relay):
    return start_relay(dispatch_tick_seconds=0.2)


def _online(client, admin, devices, *agents) -> None:
    """Bring agents online one after the other (so each has come online later than the previous)."""
    for agent in agents:
        devices(agent).online()
        wait_presence(client, admin, agent.agent_id, "online")
        time.sleep(0.02)  # deliberate: the next one comes online measurably later (ties go by it)


def _offered_to(watch, order_id: str) -> list[str]:
    """Wait for the order.offered event of this order; the agents it went to."""
    event = watch.wait_for(is_event(f"orders/{order_id}/status", "order.offered")).json
    assert event["reason"].startswith("offered to") and "auto-assignment" in event["reason"]
    return event["order"]["offer"]["agent_ids"]


def test_auto_assignment_picks_by_policy_and_respects_the_cap(
    client, admin, make_agent, place_order, devices, fast_relay, subscribe
):
    """Least active orders + offers first; ties to the longest idle; nobody over the cap; an
    order nobody can take waits, and goes to the first agent with room that has not refused it."""
    a, b, c = make_agent(), make_agent(), make_agent()
    _online(client, admin, devices, b, c, a)  # b idle longest, then c, then a
    busy = walk_to(client, admin, place_order()["id"], "confirmed")
    assert assign(client, admin, busy["id"], a.agent_id).status_code == 200  # a: one order, active just now
    orders = [place_order()["id"] for _ in range(6)]
    watch = subscribe("orders/+/status")
    patch_settings(client, admin, auto_assign=True, agent_cap=2)

    expected = [
        b,  # load 0, idle since it came online (first)
        c,  # load 0
        a,  # all at load 1: a's last activity (its assignment) is older than b's and c's offers
        b,  # a is at the cap (2); b's offer is older than c's
        c,
    ]
    for order_id, agent in zip(orders, expected, strict=False):
        set_status(client, admin, order_id, "confirmed")
        assert _offered_to(watch, order_id) == [agent.agent_id], order_id

    # Everyone is at the cap: the sixth order waits, unoffered, by a tick that saw it waiting.
    set_status(client, admin, orders[5], "confirmed")
    a_tick_has_run(client, admin, place_order, watch)
    assert get_order(client, admin, orders[5])["offer"] is None
    # b declines the fourth: b has room again; the fourth waits (b refused it), the sixth goes to b.
    assert decline(client, b, orders[3], reason="too far").status_code == 200
    assert _offered_to(watch, orders[5]) == [b.agent_id]
    a_tick_has_run(client, admin, place_order, watch)
    assert get_order(client, admin, orders[3])["offer"] is None
    agents = {x["id"]: x for x in client.get(f"{API}/agents", headers=admin.headers).json["agents"]}
    assert all(agents[x.agent_id]["active_orders"] <= 2 for x in (a, b, c))


def test_an_agent_going_offline_stops_receiving_offers(
    client, admin, make_agent, place_order, devices, fast_relay, subscribe
):
    """An agent that goes offline loses its pending offer (order.offer_expired, re-offered to an
    online agent) and is offered nothing more; its worklist shows no offers."""
    leaving, staying = make_agent(), make_agent()
    _online(client, admin, devices, leaving, staying)  # `leaving` idle longest: it gets the first offer
    watch = subscribe("orders/+/status", f"agents/{leaving.agent_id}/assigned")
    patch_settings(client, admin, auto_assign=True)
    first = walk_to(client, admin, place_order()["id"], "confirmed")["id"]
    assert _offered_to(watch, first) == [leaving.agent_id]

    devices(leaving).offline()
    expired = watch.wait_for(is_event(f"orders/{first}/status", "order.offer_expired")).json
    assert "went offline" in expired["reason"] and expired["order"]["offer"] is None
    watch.wait_for(worklist_where(leaving.agent_id, lambda w: w["offers"] == []))
    assert wait_presence(client, admin, leaving.agent_id, "offline")["source"] == "device"
    watch.wait_for(
        lambda r: (
            is_event(f"orders/{first}/status", "order.offered")(r)
            and r.json["order"]["offer"]["agent_ids"] == [staying.agent_id]
        )
    )
    second = walk_to(client, admin, place_order()["id"], "confirmed")["id"]
    assert _offered_to(watch, second) == [staying.agent_id]
    offered_to_leaving = [
        r
        for r in watch.seen
        if r.json
        and r.json.get("event") == "order.offered"
        and leaving.agent_id in r.json["order"]["offer"]["agent_ids"]
    ]
    assert len(offered_to_leaving) == 1  # only the first offer, made while it was online


def test_an_offline_only_fleet_gets_the_order_as_soon_as_an_agent_comes_online(
    client, admin, make_agent, place_order, devices, fast_relay, subscribe
):
    """With no agent online a confirmed order waits (no offer); the moment a device says
    online, the order is offered to that agent, which sees it in its worklist's offers."""
    agent = make_agent()
    device = devices(agent)
    device.offline()
    wait_presence(client, admin, agent.agent_id, "offline")
    watch = subscribe("orders/+/status", f"agents/{agent.agent_id}/assigned")
    patch_settings(client, admin, auto_assign=True)
    order_id = walk_to(client, admin, place_order()["id"], "confirmed")["id"]
    a_tick_has_run(client, admin, place_order, watch)  # it saw the order waiting, no one online
    assert get_order(client, admin, order_id)["offer"] is None
    assert not [r for r in watch.seen if r.json and r.json.get("event") == "order.offered"]

    came = time.monotonic()
    device.online()
    assert _offered_to(watch, order_id) == [agent.agent_id]
    assert time.monotonic() - came < 2.0
    watch.wait_for(worklist_where(agent.agent_id, lambda w: ids(w["offers"]) == [order_id]))


def test_auto_assignment_on_ready_waits_for_ready(
    client, admin, make_agent, place_order, devices, fast_relay, subscribe
):
    """With auto_assign_on: ready, a confirmed or preparing order is not offered; a ready one is."""
    agent = make_agent()
    _online(client, admin, devices, agent)
    watch = subscribe("orders/+/status")
    patch_settings(client, admin, auto_assign=True, auto_assign_on="ready")
    order_id = walk_to(client, admin, place_order()["id"], "preparing")["id"]
    a_tick_has_run(client, admin, place_order, watch)  # it saw the order preparing, an agent online
    assert get_order(client, admin, order_id)["offer"] is None
    set_status(client, admin, order_id, "ready")
    assert _offered_to(watch, order_id) == [agent.agent_id]
