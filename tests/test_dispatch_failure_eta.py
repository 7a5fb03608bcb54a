"""Delivery failure (a terminal status with a reason) and the ETA model (promised ready, delivery)."""

from __future__ import annotations

import pytest

from order_service.orders.eta import haversine_km
from tests.dispatch_helpers import after, history, is_event, patch_settings, utc, worklist_where
from tests.helpers import API, assert_problem, nothing_written, set_status, walk_to

# Paris (Notre-Dame) to the Eiffel Tower: about 4.1 km in a straight line.
ORIGIN = {"origin_lat": 48.8530, "origin_lon": 2.3499}
EIFFEL = {"lat": 48.8584, "lon": 2.2945}


def test_failed_with_a_reason(client, admin, make_agent, place_order, relay, subscribe):
    """The agent fails a picked-up order with a reason from the list: terminal, the failure is on
    the order and in its history, admins get the change, the order leaves the worklist."""
    agent = make_agent()
    watch = subscribe("orders/+/status", f"agents/{agent.agent_id}/assigned")
    order = walk_to(client, admin, place_order()["id"], "picked_up", agent=agent)
    response = set_status(
        client, agent, order["id"], "failed", failure={"reason": "customer_absent", "note": "rang twice"}
    )
    assert response.status_code == 200, response.json
    failed = response.json
    assert failed["status"] == "failed" and "failed" in failed["status_times"]
    assert failed["failure"] == {"reason": "customer_absent", "note": "rang twice"}
    event = watch.wait_for(
        is_event(f"orders/{order['id']}/status", "order.status_changed", status="failed")
    ).json
    assert event["order"] == failed and event["reason"] == "customer_absent: rang twice"
    watch.wait_for(worklist_where(agent.agent_id, lambda w: w["orders"] == []))
    last = history(client, admin, order["id"])[-1]
    assert (last["from_status"], last["to_status"], last["actor_role"], last["reason"]) == (
        "picked_up",
        "failed",
        "agent",
        "customer_absent: rang twice",
    )
    # Terminal: nothing moves it on.
    with nothing_written():
        problem = assert_problem(set_status(client, admin, order["id"], "delivered", force=True), 409)
        assert problem["allowed"] == []


def test_failed_without_a_reason_is_refused(client, admin, make_agent, place_order):
    """No failure, an unknown reason, or `other` without a note: 422 naming the field, nothing written."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "picked_up", agent=agent)
    with nothing_written():
        assert_problem(set_status(client, agent, order["id"], "failed"), 422, "failure")
        assert_problem(set_status(client, agent, order["id"], "failed", failure={}), 422, "failure.reason")
        assert_problem(
            set_status(client, agent, order["id"], "failed", failure={"reason": "lost"}),
            422,
            "failure.reason",
        )
        assert_problem(
            set_status(client, agent, order["id"], "failed", failure={"reason": "other", "note": "  "}),
            422,
            "failure.note",
        )
        # A failure goes with `failed` only.
        assert_problem(
            set_status(client, agent, order["id"], "delivered", failure={"reason": "refused"}), 422, "failure"
        )
    other = set_status(
        client, agent, order["id"], "failed", failure={"reason": "other", "note": "dog in the yard"}
    )
    assert other.status_code == 200 and other.json["failure"] == {
        "reason": "other",
        "note": "dog in the yard",
    }


def test_only_the_agent_fails_a_delivery_and_only_after_pickup(client, admin, make_agent, place_order):
    """An admin needs force; a ready order cannot fail (409 with the allowed moves)."""
    agent = make_agent()
    failure = {"failure": {"reason": "damaged"}}
    ready = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    with nothing_written():
        assert_problem(set_status(client, agent, ready["id"], "failed", **failure), 409)
    picked = walk_to(client, admin, place_order()["id"], "picked_up", agent=agent)
    with nothing_written():
        assert_problem(set_status(client, admin, picked["id"], "failed", **failure), 403)
    assert set_status(client, admin, picked["id"], "failed", force=True, **failure).status_code == 200


def test_lifecycle_lists_failed_and_the_reasons(client, admin):
    """GET /lifecycle: failed is terminal, reached from picked_up by the agent; the reasons are listed."""
    body = client.get(f"{API}/lifecycle", headers=admin.headers).json
    assert "failed" in body["statuses"] and "failed" in body["terminal"]
    assert body["transitions"]["picked_up"] == ["delivered", "failed"]
    assert body["moves_by_role"]["agent"]["picked_up"] == ["delivered", "failed"]
    assert body["failure_reasons"] == ["customer_absent", "wrong_address", "refused", "damaged", "other"]


def test_promised_ready_time_on_confirm(client, admin, place_order):
    """Confirming sets promised_at = confirmation + the business's preparation minutes, or the
    minutes the admin gives for this order; prep_minutes goes with confirmed only."""
    default = set_status(client, admin, place_order()["id"], "confirmed").json
    assert utc(default["promised_at"]) == after(utc(default["status_times"]["confirmed"]), minutes=20)
    quick = set_status(client, admin, place_order()["id"], "confirmed", prep_minutes=5).json
    assert utc(quick["promised_at"]) == after(utc(quick["status_times"]["confirmed"]), minutes=5)
    patch_settings(client, admin, prep_minutes=45)
    slow = set_status(client, admin, place_order()["id"], "confirmed").json
    assert utc(slow["promised_at"]) == after(utc(slow["status_times"]["confirmed"]), minutes=45)
    with nothing_written():
        assert_problem(
            set_status(client, admin, quick["id"], "preparing", prep_minutes=5), 422, "prep_minutes"
        )
    assert place_order()["promised_at"] is None


def test_delivery_eta_fixed_minutes_without_coordinates(client, admin, make_agent, place_order):
    """Picked up without coordinates: eta = pickup + travel_minutes (default 30)."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    assert order["eta"] is None
    picked = set_status(client, agent, order["id"], "picked_up").json
    assert utc(picked["eta"]) == after(utc(picked["status_times"]["picked_up"]), minutes=30)


def test_delivery_eta_from_distance_and_speed(client, admin, make_agent, place_order):
    """With the business's origin set and the order's delivery_location given:
    eta = pickup + haversine distance / travel_speed_kmh."""
    agent = make_agent()
    patch_settings(client, admin, travel_speed_kmh=12, **ORIGIN)
    order = place_order(delivery_location=EIFFEL)
    assert order["delivery_location"] == EIFFEL
    walk_to(client, admin, order["id"], "ready", agent=agent)
    picked = set_status(client, agent, order["id"], "picked_up").json
    km = haversine_km(ORIGIN["origin_lat"], ORIGIN["origin_lon"], EIFFEL["lat"], EIFFEL["lon"])
    assert 4.0 < km < 4.3
    travel = (utc(picked["eta"]) - utc(picked["status_times"]["picked_up"])).total_seconds()
    assert travel == pytest.approx(km / 12 * 3600, abs=0.002)


@pytest.mark.parametrize(
    "location", [{"lat": 91, "lon": 0}, {"lat": 0, "lon": -181}, {"lat": "1", "lon": 2}, {"lat": 1}]
)
def test_bad_delivery_location_is_refused(client, admin, location):
    """Coordinates are numbers within range, both given."""
    from tests.conftest import order_body

    with nothing_written():
        response = client.post(
            f"{API}/orders", json=order_body(delivery_location=location), headers=admin.headers
        )
        assert_problem(response, 422)
