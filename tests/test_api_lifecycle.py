"""The order lifecycle over REST: transitions, assignment, history, outbox and If-Match."""

from __future__ import annotations

from order_service import lifecycle
from tests.helpers import (
    API,
    MOVE_EXTRA,
    PATHS,
    assert_problem,
    assign,
    counts,
    get_order,
    history_rows,
    latest_worklist,
    max_outbox_id,
    nothing_written,
    outbox_after,
    set_status,
    walk_to,
)

ALLOWED = sorted((f, t) for f, targets in lifecycle.TRANSITIONS.items() for t in targets)
DISALLOWED = sorted((f, t) for f in lifecycle.STATUSES for t in lifecycle.STATUSES if (f, t) not in ALLOWED)

# Every (from, to, role, force) the rules allow: each role's own moves, and the
# admin's forced moves made on an agent's behalf.
MOVES = sorted(
    [(f, t, role, False) for role, moves in lifecycle.ROLE_MOVES.items() for f, t in moves]
    + [
        (f, t, "admin", True)
        for f, t in lifecycle.FORCED_MOVES["admin"]
        if (f, t) not in lifecycle.ROLE_MOVES["admin"]
    ]
)


def test_the_move_table_covers_every_transition():
    """Every transition in lifecycle.TRANSITIONS has at least one role that may make it."""
    assert {(f, t) for f, t, _, _ in MOVES} == set(ALLOWED)
    assert len(ALLOWED) + len(DISALLOWED) == len(lifecycle.STATUSES) ** 2


def _check_change(
    client,
    admin,
    before: dict,
    response,
    *,
    actor,
    event: str,
    reason: str,
    outbox_mark: int,
    history_before: int,
    counts_before: dict,
) -> dict:
    """One committed change: version +1, ETag, one history row, the order's outbox rows."""
    assert response.status_code == 200, response.json
    # The order's own customer also reads its delivery code (proof of delivery); nobody else does.
    order = {k: v for k, v in response.json.items() if k != "delivery_code"}
    assert order["id"] == before["id"]
    assert order["version"] == before["version"] + 1
    assert response.headers["ETag"] == f'"{order["version"]}"'
    assert get_order(client, admin, order["id"]) == order

    rows = history_rows(order["id"])
    assert len(rows) == history_before + 1
    last = rows[-1]
    assert (last.version, last.event, last.actor_id, last.actor_role) == (
        order["version"],
        event,
        actor.user_id,
        actor.role,
    )
    assert (last.from_status, last.to_status) == (before["status"], order["status"])
    assert (last.from_agent, last.to_agent) == (before["agent_id"], order["agent_id"])
    assert last.reason == reason

    # Only history and outbox grow.
    after_counts = counts()
    assert after_counts["OrderHistory"] == counts_before["OrderHistory"] + 1
    for table in ("Order", "OrderItem", "IdempotencyKey", "User", "Agent"):
        assert after_counts[table] == counts_before[table], table

    new_rows = outbox_after(outbox_mark)
    status_rows = [r for r in new_rows if r["kind"] == "status"]
    assert len(status_rows) == 1, new_rows
    (row,) = status_rows
    assert (row["event"], row["topic"], row["order_id"]) == (
        event,
        f"orders/{order['id']}/status",
        order["id"],
    )
    assert row["payload"]["event"] == event
    assert row["payload"]["order"] == order
    assert not [r for r in new_rows if r["kind"] == "new"]

    touched = {a for a in (before["agent_id"], order["agent_id"]) if a}
    worklists = [r for r in new_rows if r["kind"] == "worklist"]
    assert sorted(r["agent_id"] for r in worklists) == sorted(touched), worklists
    for wl in worklists:
        agent_id = wl["agent_id"]
        assert wl["event"] == "agent.worklist"
        assert wl["topic"] == f"agents/{agent_id}/assigned"
        payload = wl["payload"]
        assert payload["agent_id"] == agent_id
        listed = {o["id"]: o for o in payload["orders"]}
        on_list = order["agent_id"] == agent_id and order["status"] not in lifecycle.TERMINAL
        assert (order["id"] in listed) is on_list, payload
        if on_list:
            assert listed[order["id"]] == order
        assert all(o["status"] not in lifecycle.TERMINAL for o in payload["orders"])
        assert all(o["agent_id"] == agent_id for o in payload["orders"])
        # The REST worklist agrees with the last published one.
        rest = client.get(f"{API}/agents/{agent_id}/orders", headers=admin.headers).json
        assert rest["version"] == payload["version"]
        assert [o["id"] for o in rest["orders"]] == [o["id"] for o in payload["orders"]]
    # A customer's order: its feed too (customers/<id>/orders), with the order as it is now.
    feeds = [r for r in new_rows if r["kind"] == "customer"]
    assert len(feeds) <= 1, feeds
    for feed in feeds:
        (view,) = [o for o in feed["payload"]["orders"] if o["id"] == order["id"]]
        assert view["status"] == order["status"] and view["status_times"] == order["status_times"]
    assert len(new_rows) == 1 + len(worklists) + len(feeds)
    return order


def _change_status(client, admin, actor, order: dict, target: str, *, force: bool = False):
    """Make one status change and check everything it must write."""
    reason = f"{order['status']} → {target} ✓"
    marks = dict(
        outbox_mark=max_outbox_id(),
        history_before=len(history_rows(order["id"])),
        counts_before=counts(),
    )
    body = {"status": target, "reason": reason, **MOVE_EXTRA.get(target, {})}
    if force:
        body["force"] = True
    response = client.patch(f"{API}/orders/{order['id']}/status", json=body, headers=actor.headers)
    changed = _check_change(
        client,
        admin,
        order,
        response,
        actor=actor,
        event="order.status_changed",
        reason=reason,
        **marks,
    )
    assert changed["status"] == target
    # status_times keeps earlier statuses and stamps the new one at the change.
    for status, at in order["status_times"].items():
        if status != target:
            assert changed["status_times"][status] == at
    assert changed["status_times"][target] == changed["updated_at"]
    assert changed["updated_at"] >= order["updated_at"]
    return changed


def test_every_allowed_transition_succeeds(client, admin, make_agent, make_customer, place_order, subtests):
    """Each allowed move by an allowed role commits version, history, status time, outbox."""
    agent = make_agent()
    customer = make_customer()
    actors = {"admin": admin, "agent": agent, "customer": customer}
    for current, target, role, force in MOVES:
        with subtests.test(move=f"{current}->{target}", role=role, force=force):
            placed = place_order(customer if role == "customer" else admin)
            # Assign the agent on the way wherever the status allows one.
            order = walk_to(client, admin, placed["id"], current, agent=agent)
            if current in lifecycle.ASSIGNABLE or current in lifecycle.NEEDS_AGENT:
                assert order["agent_id"] == agent.agent_id
            changed = _change_status(client, admin, actors[role], order, target, force=force)
            assert changed["agent_id"] == order["agent_id"]


def test_full_walk_to_delivered(client, admin, make_agent, place_order):
    """The happy path to delivered, each step checked; delivered leaves the worklist empty."""
    agent = make_agent()
    order = place_order()
    assert order["version"] == 1
    assert list(order["status_times"]) == ["placed"]
    order = _change_status(client, admin, admin, order, "confirmed")
    marks = dict(
        outbox_mark=max_outbox_id(),
        history_before=len(history_rows(order["id"])),
        counts_before=counts(),
    )
    order = _check_change(
        client,
        admin,
        order,
        assign(client, admin, order["id"], agent.agent_id),
        actor=admin,
        event="order.assigned",
        reason="",
        **marks,
    )
    for target, actor in (
        ("preparing", admin),
        ("ready", admin),
        ("picked_up", agent),
        ("delivered", agent),
    ):
        order = _change_status(client, admin, actor, order, target)
    assert order["version"] == 7
    assert list(order["status_times"]) == ["placed", *PATHS["delivered"]]
    worklist = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers).json
    assert worklist["orders"] == []
    assert latest_worklist(agent.agent_id)["orders"] == []


def test_every_disallowed_transition_is_409(client, admin, make_agent, place_order, subtests):
    """Every (from, to) not in the table, same status included, is 409 with `allowed`."""
    agent = make_agent()
    for current in lifecycle.STATUSES:
        placed = place_order()
        order = walk_to(client, admin, placed["id"], current, agent=agent)
        askers = [(admin, False), (admin, True)]
        if order["agent_id"] == agent.agent_id:
            askers.append((agent, False))  # the agent sees the order, so it gets the 409 too
        for target in lifecycle.STATUSES:
            if lifecycle.is_transition(current, target):
                continue
            for actor, force in askers:
                with subtests.test(move=f"{current}->{target}", role=actor.role, force=force):
                    with nothing_written():
                        body = {"status": target, **({"force": True} if force else {})}
                        response = client.patch(
                            f"{API}/orders/{order['id']}/status", json=body, headers=actor.headers
                        )
                        problem = assert_problem(response, 409)
                        assert problem["allowed"] == lifecycle.next_statuses(current)
                        assert problem["status_now"] == current
    assert len(DISALLOWED) == 70  # 9 statuses squared, less the 11 moves of the table


def test_picked_up_without_agent_is_409_even_when_forced(client, admin, place_order):
    """An order with no agent cannot be picked up: 409 even for an admin who forces it."""
    order = walk_to(client, admin, place_order()["id"], "ready")
    assert order["agent_id"] is None
    with nothing_written():
        problem = assert_problem(set_status(client, admin, order["id"], "picked_up", force=True), 409)
        assert problem["allowed"] == lifecycle.next_statuses("ready")
        assert "agent" in problem["detail"]
        # Without force the admin is refused for the move itself.
        assert_problem(set_status(client, admin, order["id"], "picked_up"), 403)


# --- assignment ----------------------------------------------------------------


def _assign_checked(client, admin, order: dict, agent_id: str) -> dict:
    marks = dict(
        outbox_mark=max_outbox_id(),
        history_before=len(history_rows(order["id"])),
        counts_before=counts(),
    )
    response = assign(client, admin, order["id"], agent_id)
    changed = _check_change(
        client, admin, order, response, actor=admin, event="order.assigned", reason="", **marks
    )
    assert changed["agent_id"] == agent_id
    assert changed["status"] == order["status"]
    assert changed["status_times"] == order["status_times"]
    return changed


def test_assign_in_assignable_statuses(client, admin, make_agent, place_order, subtests):
    """An agent can be assigned in confirmed, preparing and ready; it lands on its worklist."""
    agent = make_agent()
    for status in sorted(lifecycle.ASSIGNABLE):
        with subtests.test(status=status):
            order = walk_to(client, admin, place_order()["id"], status)
            order = _assign_checked(client, admin, order, agent.agent_id)
            worklist = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers)
            assert order["id"] in [o["id"] for o in worklist.json["orders"]]
            assert order["id"] in [o["id"] for o in latest_worklist(agent.agent_id)["orders"]]
            # The agent can now read it.
            assert client.get(f"{API}/orders/{order['id']}", headers=agent.headers).status_code == 200


def test_assign_outside_assignable_statuses_is_409(client, admin, make_agent, place_order, subtests):
    """Assigning, reassigning or unassigning in placed, picked_up or a terminal status is 409."""
    first, second = make_agent(), make_agent()
    for status in lifecycle.STATUSES:
        if status in lifecycle.ASSIGNABLE:
            continue
        order = walk_to(client, admin, place_order()["id"], status, agent=first)
        with subtests.test(status=status), nothing_written():
            for agent_id in (second.agent_id, first.agent_id):
                problem = assert_problem(assign(client, admin, order["id"], agent_id), 409)
                assert problem["status_now"] == status
            problem = assert_problem(
                client.delete(f"{API}/orders/{order['id']}/agent", headers=admin.headers), 409
            )
            assert problem["status_now"] == status


def test_assigning_the_same_agent_again_changes_nothing(client, admin, make_agent, place_order):
    """PUT of the agent already assigned is a no-op: 200, same version, nothing written."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "preparing", agent=agent)
    with nothing_written():
        response = assign(client, admin, order["id"], agent.agent_id)
        assert response.status_code == 200
        assert response.json == order


def test_reassign_moves_the_order_between_worklists(client, admin, make_agent, place_order):
    """Reassigning from agent A to B takes the order off A's worklist and puts it on B's."""
    a, b = make_agent(), make_agent()
    order = walk_to(client, admin, place_order()["id"], "preparing", agent=a)
    other = walk_to(client, admin, place_order()["id"], "ready", agent=a)  # stays with A
    version_a = latest_worklist(a.agent_id)["version"]
    version_b = latest_worklist(b.agent_id)["version"]

    mark = max_outbox_id()
    order = _assign_checked(client, admin, order, b.agent_id)
    worklists = {r["agent_id"]: r["payload"] for r in outbox_after(mark) if r["kind"] == "worklist"}
    assert set(worklists) == {a.agent_id, b.agent_id}
    assert [o["id"] for o in worklists[a.agent_id]["orders"]] == [other["id"]]
    assert [o["id"] for o in worklists[b.agent_id]["orders"]] == [order["id"]]
    assert worklists[a.agent_id]["version"] == version_a + 1
    assert worklists[b.agent_id]["version"] == version_b + 1

    rest_a = client.get(f"{API}/agents/{a.agent_id}/orders", headers=a.headers).json
    rest_b = client.get(f"{API}/agents/{b.agent_id}/orders", headers=b.headers).json
    assert [o["id"] for o in rest_a["orders"]] == [other["id"]]
    assert [o["id"] for o in rest_b["orders"]] == [order["id"]]
    # A no longer sees the order; B does.
    assert_problem(client.get(f"{API}/orders/{order['id']}", headers=a.headers), 404)
    assert client.get(f"{API}/orders/{order['id']}", headers=b.headers).status_code == 200
    last = history_rows(order["id"])[-1]
    assert (last.event, last.from_agent, last.to_agent) == ("order.assigned", a.agent_id, b.agent_id)


def test_unassign_takes_the_order_off_the_worklist(client, admin, make_agent, place_order):
    """Unassigning clears the agent and republishes its worklist; repeating it is a no-op."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    marks = dict(
        outbox_mark=max_outbox_id(),
        history_before=len(history_rows(order["id"])),
        counts_before=counts(),
    )
    response = client.delete(f"{API}/orders/{order['id']}/agent", headers=admin.headers)
    order = _check_change(
        client, admin, order, response, actor=admin, event="order.unassigned", reason="", **marks
    )
    assert order["agent_id"] is None
    assert latest_worklist(agent.agent_id)["orders"] == []
    assert client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers).json["orders"] == []
    with nothing_written():
        response = client.delete(f"{API}/orders/{order['id']}/agent", headers=admin.headers)
        assert response.status_code == 200
        assert response.json == order


def test_cancelling_an_assigned_order_removes_it_from_the_worklist(client, admin, make_agent, place_order):
    """A cancelled order leaves its agent's worklist (REST and the published worklist)."""
    agent = make_agent()
    keep = walk_to(client, admin, place_order()["id"], "confirmed", agent=agent)
    order = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    before = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers).json
    assert [o["id"] for o in before["orders"]] == [keep["id"], order["id"]]

    order = _change_status(client, admin, admin, order, "cancelled")
    after = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers).json
    assert [o["id"] for o in after["orders"]] == [keep["id"]]
    assert after["version"] == before["version"] + 1
    published = latest_worklist(agent.agent_id)
    assert [o["id"] for o in published["orders"]] == [keep["id"]]
    assert published["version"] == after["version"]
    # The order itself keeps its agent (history), it is just no longer work to do.
    assert order["agent_id"] == agent.agent_id


# --- history ---------------------------------------------------------------------


def test_history_lists_every_change_in_order(client, admin, make_agent, place_order):
    """GET /orders/<id>/history returns every change, oldest first, with who, from, to, why."""
    a, b = make_agent(), make_agent()
    order = place_order()
    oid = order["id"]
    steps = [
        lambda: set_status(client, admin, oid, "confirmed", reason="ok"),
        lambda: assign(client, admin, oid, a.agent_id),
        lambda: set_status(client, admin, oid, "preparing", reason="oven on"),
        lambda: assign(client, admin, oid, b.agent_id),
        lambda: client.delete(f"{API}/orders/{oid}/agent", headers=admin.headers),
        lambda: assign(client, admin, oid, a.agent_id),
        lambda: set_status(client, admin, oid, "ready"),
        lambda: set_status(client, a, oid, "picked_up", reason="on my way"),
        lambda: set_status(client, a, oid, "delivered", reason="left at door"),
    ]
    for step in steps:
        assert step().status_code == 200
    response = client.get(f"{API}/orders/{oid}/history", headers=admin.headers)
    assert response.status_code == 200
    assert response.json["order_id"] == oid
    history = response.json["history"]
    got = [
        (
            h["version"],
            h["event"],
            h["actor"],
            h["from_status"],
            h["to_status"],
            h["from_agent"],
            h["to_agent"],
            h["reason"],
        )
        for h in history
    ]
    ag, bg = a.agent_id, b.agent_id
    adm = admin.user_id
    assert got == [
        (1, "order.created", adm, None, "placed", None, None, ""),
        (2, "order.status_changed", adm, "placed", "confirmed", None, None, "ok"),
        (3, "order.assigned", adm, "confirmed", "confirmed", None, ag, ""),
        (4, "order.status_changed", adm, "confirmed", "preparing", ag, ag, "oven on"),
        (5, "order.assigned", adm, "preparing", "preparing", ag, bg, ""),
        (6, "order.unassigned", adm, "preparing", "preparing", bg, None, ""),
        (7, "order.assigned", adm, "preparing", "preparing", None, ag, ""),
        (8, "order.status_changed", adm, "preparing", "ready", ag, ag, ""),
        (9, "order.status_changed", a.user_id, "ready", "picked_up", ag, ag, "on my way"),
        (10, "order.status_changed", a.user_id, "picked_up", "delivered", ag, ag, "left at door"),
    ]
    assert [h["actor_role"] for h in history] == ["admin"] * 8 + ["agent"] * 2
    ats = [h["at"] for h in history]
    assert ats == sorted(ats)
    # The order's status times agree with the history.
    final = get_order(client, admin, oid)
    assert final["version"] == 10
    for h in history:
        if h["event"] in ("order.created", "order.status_changed"):
            assert final["status_times"][h["to_status"]] == h["at"]
    # The order's agent may read its history; an agent it was taken from may not.
    assert client.get(f"{API}/orders/{oid}/history", headers=a.headers).json == response.json
    assert_problem(client.get(f"{API}/orders/{oid}/history", headers=b.headers), 404)


# --- optimistic concurrency ------------------------------------------------------


def test_stale_if_match_is_412(client, admin, make_agent, place_order):
    """A write with an If-Match older than the order's version answers 412 and writes nothing."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "confirmed")
    assert order["version"] == 2
    url = f"{API}/orders/{order['id']}"
    for stale in ('"1"', "1", 'W/"1"', '"3"', "99"):
        headers = {**admin.headers, "If-Match": stale}
        with nothing_written():
            for response in (
                client.patch(f"{url}/status", json={"status": "preparing"}, headers=headers),
                client.put(f"{url}/agent", json={"agent_id": agent.agent_id}, headers=headers),
                client.delete(f"{url}/agent", headers=headers),
            ):
                problem = assert_problem(response, 412)
                assert problem["current_version"] == 2


def test_matching_if_match_succeeds(client, admin, make_agent, place_order):
    """A current If-Match, quoted ("3"), bare (3) or weak (W/"5"), lets the write through."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "confirmed", agent=agent)
    assert order["version"] == 3
    url = f"{API}/orders/{order['id']}"
    response = client.patch(
        f"{url}/status", json={"status": "preparing"}, headers={**admin.headers, "If-Match": '"3"'}
    )
    assert response.status_code == 200, response.json
    assert response.json["version"] == 4
    response = client.delete(f"{url}/agent", headers={**admin.headers, "If-Match": "4"})
    assert response.status_code == 200, response.json
    assert response.json["version"] == 5
    response = client.put(
        f"{url}/agent",
        json={"agent_id": agent.agent_id},
        headers={**admin.headers, "If-Match": 'W/"5"'},
    )
    assert response.status_code == 200, response.json
    assert response.json["version"] == 6
    assert response.headers["ETag"] == '"6"'


def test_if_match_from_etag_round_trips(client, admin, place_order):
    """The ETag of GET /orders/<id> is a valid If-Match for the next write."""
    order = place_order()
    etag = client.get(f"{API}/orders/{order['id']}", headers=admin.headers).headers["ETag"]
    response = client.patch(
        f"{API}/orders/{order['id']}/status",
        json={"status": "confirmed"},
        headers={**admin.headers, "If-Match": etag},
    )
    assert response.status_code == 200, response.json
    # The same ETag is now stale.
    with nothing_written():
        response = client.patch(
            f"{API}/orders/{order['id']}/status",
            json={"status": "preparing"},
            headers={**admin.headers, "If-Match": etag},
        )
        assert_problem(response, 412)


def test_if_match_star_matches_any_version(client, admin, place_order):
    """If-Match: * (RFC 9110) matches whatever the current version is."""
    order = place_order()
    response = client.patch(
        f"/api/v1/orders/{order['id']}/status",
        json={"status": "confirmed"},
        headers={**admin.headers, "If-Match": "*"},
    )
    assert response.status_code == 200
    assert response.json["version"] == 2
