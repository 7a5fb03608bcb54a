"""Offers over the real service and broker: accepted, declined, expired, raced, withdrawn.

The offered agent learns of the offer from its own worklist topic
(``agents/<id>/assigned``, ``offers``), admins from ``orders/<id>/status``; answers go
over REST. Expiry is a timer: the tests run the relay's tick with a chosen clock.
"""

from __future__ import annotations

import threading

from tests.dispatch_helpers import (
    accept,
    after,
    decline,
    history,
    ids,
    is_event,
    offer,
    patch_settings,
    run_tick,
    utc,
    worklist_where,
)
from tests.helpers import API, assert_problem, get_order, nothing_written, walk_to


def _status(order_id: str) -> str:
    return f"orders/{order_id}/status"


def test_offer_accepted(client, admin, make_agent, place_order, relay, subscribe):
    """An offer reaches the agent's worklist as an offer, not an assignment; accepting assigns
    the order to it (order.assigned), moves it from offers to orders, and is in the history."""
    agent = make_agent()
    device = subscribe(f"agents/{agent.agent_id}/#")
    admins = subscribe("orders/+/status")
    order = walk_to(client, admin, place_order()["id"], "confirmed")

    response = client.put(
        f"{API}/orders/{order['id']}/agent",
        json={"agent_id": agent.agent_id, "offer": True},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.json
    offered = response.json
    assert offered["agent_id"] is None
    assert offered["offer"]["agent_ids"] == [agent.agent_id]
    lasts = utc(offered["offer"]["expires_at"]) - utc(offered["offer"]["offered_at"])
    assert lasts.total_seconds() == 60  # the default offer_seconds
    event = admins.wait_for(is_event(_status(order["id"]), "order.offered")).json
    assert event["order"] == offered and agent.agent_id in event["reason"]
    wl = device.wait_for(worklist_where(agent.agent_id, lambda w: ids(w["offers"]) == [order["id"]])).json
    assert wl["orders"] == [] and wl["offers"][0]["offer"]["agent_ids"] == [agent.agent_id]
    # While offered, the agent may read the order (and nobody else's).
    assert get_order(client, agent, order["id"])["offer"] is not None

    response = accept(client, agent, order["id"])
    assert response.status_code == 200, response.json
    assigned = response.json
    assert assigned["agent_id"] == agent.agent_id and assigned["offer"] is None
    assert assigned["version"] == offered["version"] + 1
    event = admins.wait_for(
        is_event(_status(order["id"]), "order.assigned", version=assigned["version"])
    ).json
    assert event["order"] == assigned
    device.wait_for(
        worklist_where(agent.agent_id, lambda w: ids(w["orders"]) == [order["id"]] and w["offers"] == [])
    )
    rows = history(client, admin, order["id"])
    assert [(h["event"], h["actor_role"]) for h in rows[-2:]] == [
        ("order.offered", "admin"),
        ("order.assigned", "agent"),
    ]
    assert rows[-1]["reason"] == "accepted the offer" and rows[-1]["to_agent"] == agent.agent_id
    # A retry of the same accept answers the same, and writes nothing.
    with nothing_written():
        again = accept(client, agent, order["id"])
    assert again.status_code == 200 and again.json == assigned


def test_offer_declined(client, admin, make_agent, place_order, relay, subscribe):
    """A decline returns the order to unassigned, alerts admins (order.offer_declined with the
    reason, and a history row), and removes the offer from the agent's worklist."""
    agent = make_agent()
    device = subscribe(f"agents/{agent.agent_id}/#")
    admins = subscribe("orders/+/status")
    order = walk_to(client, admin, place_order()["id"], "preparing")
    assert offer(client, admin, order["id"], agent).status_code == 200
    device.wait_for(worklist_where(agent.agent_id, lambda w: ids(w["offers"]) == [order["id"]]))

    response = decline(client, agent, order["id"], reason="scooter has a flat tyre")
    assert response.status_code == 200, response.json
    assert response.json["offer"] is None and response.json["agent_id"] is None
    event = admins.wait_for(is_event(_status(order["id"]), "order.offer_declined")).json
    assert "scooter has a flat tyre" in event["reason"] and "unassigned" in event["reason"]
    assert event["order"]["status"] == "preparing" and event["order"]["offer"] is None
    device.wait_for(worklist_where(agent.agent_id, lambda w: w["offers"] == [] and w["orders"] == []))
    last = history(client, admin, order["id"])[-1]
    assert (last["event"], last["actor_role"], last["from_agent"], last["to_agent"]) == (
        "order.offer_declined",
        "agent",
        None,
        None,
    )
    assert "scooter has a flat tyre" in last["reason"]
    # The offer is over: the agent no longer sees the order, and a second answer is a 409.
    assert_problem(client.get(f"{API}/orders/{order['id']}", headers=agent.headers), 404)
    with nothing_written():
        assert assert_problem(accept(client, agent, order["id"]), 409)["offer_state"] == "declined"


def test_offer_expired(app, client, admin, make_agent, place_order, relay, subscribe):
    """An offer left unanswered expires at its time (not before): the order is unassigned again,
    admins get order.offer_expired and a history row; a late accept is a 409."""
    agent = make_agent()
    device = subscribe(f"agents/{agent.agent_id}/#")
    admins = subscribe("orders/+/status")
    order = walk_to(client, admin, place_order()["id"], "ready")
    offered = offer(client, admin, order["id"], agent, expires_in_seconds=30).json
    expires = utc(offered["offer"]["expires_at"])
    device.wait_for(worklist_where(agent.agent_id, lambda w: ids(w["offers"]) == [order["id"]]))

    assert run_tick(app, after(expires, seconds=-1)).expired == []
    assert get_order(client, admin, order["id"])["offer"] is not None
    assert run_tick(app, after(expires, milliseconds=1)).expired == [order["id"]]  # (ms in the payload)
    assert run_tick(app, after(expires, seconds=5)).expired == []  # once only

    event = admins.wait_for(is_event(_status(order["id"]), "order.offer_expired")).json
    assert event["order"]["offer"] is None and event["order"]["agent_id"] is None
    assert "expired unanswered" in event["reason"]
    device.wait_for(worklist_where(agent.agent_id, lambda w: w["offers"] == []))
    rows = [h for h in history(client, admin, order["id"]) if h["event"] == "order.offer_expired"]
    assert len(rows) == 1 and rows[0]["actor_role"] == "system"
    with nothing_written():
        assert assert_problem(accept(client, agent, order["id"]), 409)["offer_state"] == "expired"


def test_two_agents_racing_to_accept_one_offer(client, admin, make_agent, place_order, relay, subscribe):
    """One order offered to two agents who accept at the same moment: exactly one wins (200,
    assigned to it), the other gets a 409 problem (offer taken); one order.assigned, one owner."""
    first, second = make_agent(), make_agent()
    admins = subscribe("orders/+/status")
    for _round in range(4):
        order = walk_to(client, admin, place_order()["id"], "confirmed")
        assert offer(client, admin, order["id"], first, second).status_code == 200
        barrier = threading.Barrier(2)
        answers: dict[str, object] = {}

        def race(agent, answers=answers, barrier=barrier, order_id=order["id"]) -> None:
            barrier.wait(5)
            answers[agent.agent_id] = accept(client, agent, order_id)

        threads = [threading.Thread(target=race, args=(a,)) for a in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {k: (r.status_code, r.json) for k, r in answers.items()}
        (winner,) = [k for k, r in answers.items() if r.status_code == 200]
        (loser,) = [r for r in answers.values() if r.status_code == 409]
        problem = assert_problem(loser, 409)
        assert problem["offer_state"] == "taken"
        assert get_order(client, admin, order["id"])["agent_id"] == winner
        rows = history(client, admin, order["id"])
        assert [h["to_agent"] for h in rows if h["event"] == "order.assigned"] == [winner]
        admins.wait_for(is_event(_status(order["id"]), "order.assigned", agent_id=winner))


def test_only_the_offered_agents_may_answer(client, admin, make_agent, place_order):
    """Another agent gets 404 (as for any order it may not see); an admin may not answer (403)."""
    offered, other = make_agent(), make_agent()
    order = walk_to(client, admin, place_order()["id"], "confirmed")
    assert offer(client, admin, order["id"], offered).status_code == 200
    with nothing_written():
        assert_problem(accept(client, other, order["id"]), 404)
        assert_problem(decline(client, other, order["id"]), 404)
        assert_problem(client.get(f"{API}/orders/{order['id']}", headers=other.headers), 404)
        assert_problem(accept(client, admin, order["id"]), 403)
    listed = client.get(f"{API}/orders", headers=offered.headers).json["orders"]
    assert ids(listed) == [order["id"]]
    assert client.get(f"{API}/orders", headers=other.headers).json["orders"] == []


def test_offers_need_an_assignable_order_and_real_agents(client, admin, make_agent, place_order):
    """Offering a placed order is a 409; an unknown agent a 422 naming the field."""
    agent = make_agent()
    placed = place_order()
    confirmed = walk_to(client, admin, place_order()["id"], "confirmed")
    with nothing_written():
        assert_problem(offer(client, admin, placed["id"], agent), 409)
        response = client.post(
            f"{API}/orders/{confirmed['id']}/offer",
            json={"agent_ids": ["agt_000000000000"]},
            headers=admin.headers,
        )
        assert_problem(response, 422, "agent_ids")


def test_offer_required_setting_turns_assignment_into_an_offer(client, admin, make_agent, place_order):
    """With offer_required on, PUT /orders/<id>/agent offers; "offer": false still assigns directly."""
    agent = make_agent()
    patch_settings(client, admin, offer_required=True, offer_seconds=120)
    order = walk_to(client, admin, place_order()["id"], "confirmed")
    put = client.put(
        f"{API}/orders/{order['id']}/agent", json={"agent_id": agent.agent_id}, headers=admin.headers
    )
    body = put.json
    assert body["agent_id"] is None and body["offer"]["agent_ids"] == [agent.agent_id]
    assert (utc(body["offer"]["expires_at"]) - utc(body["offer"]["offered_at"])).total_seconds() == 120
    direct = client.put(
        f"{API}/orders/{order['id']}/agent",
        json={"agent_id": agent.agent_id, "offer": False},
        headers=admin.headers,
    ).json
    assert direct["agent_id"] == agent.agent_id and direct["offer"] is None
    with nothing_written():
        assert assert_problem(accept(client, agent, order["id"]), 409)["offer_state"] == "withdrawn"


def test_cancelling_an_offered_order_withdraws_the_offer(
    client, admin, make_agent, place_order, relay, subscribe
):
    """An offered order that is cancelled leaves the agent's offers; a late accept is a 409."""
    agent = make_agent()
    device = subscribe(f"agents/{agent.agent_id}/#")
    order = walk_to(client, admin, place_order()["id"], "confirmed")
    assert offer(client, admin, order["id"], agent).status_code == 200
    device.wait_for(worklist_where(agent.agent_id, lambda w: ids(w["offers"]) == [order["id"]]))
    response = client.patch(
        f"{API}/orders/{order['id']}/status", json={"status": "cancelled"}, headers=admin.headers
    )
    assert response.status_code == 200 and response.json["offer"] is None
    device.wait_for(worklist_where(agent.agent_id, lambda w: w["offers"] == []))
    assert assert_problem(accept(client, agent, order["id"]), 409)["offer_state"] == "withdrawn"
