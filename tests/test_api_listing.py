"""GET /orders (pagination and filters) and GET /events (the event log)."""

from __future__ import annotations

from tests.helpers import API, assert_problem, assign, outbox, set_status, walk_to


def _walk_pages(client, actor, query: dict) -> tuple[list[str], list[int]]:
    """Follow next_cursor to the end; returns the ids in order and the page sizes."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(100):
        params = dict(query, **({"cursor": cursor} if cursor else {}))
        response = client.get(f"{API}/orders", query_string=params, headers=actor.headers)
        assert response.status_code == 200, response.json
        page = response.json["orders"]
        ids += [o["id"] for o in page]
        sizes.append(len(page))
        cursor = response.json["next_cursor"]
        if cursor is None:
            return ids, sizes
    raise AssertionError("pagination did not end")


# --- GET /orders -------------------------------------------------------------------


def test_pagination_walks_every_order_once_newest_first(client, admin, place_order, subtests):
    """limit + next_cursor visit every order exactly once, newest first, whatever the limit."""
    created = [place_order(notes=f"#{n}")["id"] for n in range(7)]
    newest_first = created[::-1]
    for limit, sizes in ((1, [1] * 7), (3, [3, 3, 1]), (6, [6, 1]), (7, [7]), (50, [7])):
        with subtests.test(limit=limit):
            ids, got_sizes = _walk_pages(client, admin, {"limit": limit})
            assert ids == newest_first
            assert got_sizes == sizes
    full = client.get(f"{API}/orders", headers=admin.headers).json
    stamps = [o["created_at"] for o in full["orders"]]
    assert stamps == sorted(stamps, reverse=True)
    assert full["next_cursor"] is None


def test_pagination_is_stable_while_orders_arrive(client, admin, place_order):
    """Orders placed during a walk do not shift the pages: each older order is seen once."""
    created = [place_order()["id"] for _ in range(5)]
    first = client.get(f"{API}/orders", query_string={"limit": 2}, headers=admin.headers).json
    seen = [o["id"] for o in first["orders"]]
    newcomer = place_order()["id"]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(
            f"{API}/orders", query_string={"limit": 2, "cursor": cursor}, headers=admin.headers
        ).json
        seen += [o["id"] for o in page["orders"]]
        cursor = page["next_cursor"]
    assert seen == created[::-1]
    assert newcomer not in seen


def test_pagination_combines_with_filters(client, admin, place_order):
    """A cursor walk under a status filter returns exactly the matching orders once each."""
    ids = [place_order()["id"] for _ in range(6)]
    cancelled = ids[::2]
    for oid in cancelled:
        assert set_status(client, admin, oid, "cancelled").status_code == 200
    walked, _ = _walk_pages(client, admin, {"status": "cancelled", "limit": 2})
    assert walked == cancelled[::-1]


def test_status_filter_single_and_list(client, admin, make_agent, place_order):
    """status= takes one status or a comma-separated list (spaces allowed)."""
    agent = make_agent()
    by_status = {
        status: walk_to(client, admin, place_order()["id"], status, agent=agent)["id"]
        for status in ("placed", "confirmed", "ready", "delivered", "cancelled", "rejected")
    }

    def listed(value: str) -> set[str]:
        response = client.get(f"{API}/orders", query_string={"status": value}, headers=admin.headers)
        assert response.status_code == 200, response.json
        assert all(o["status"] in value for o in response.json["orders"])
        return {o["id"] for o in response.json["orders"]}

    for status, oid in by_status.items():
        assert listed(status) == {oid}
    assert listed("preparing") == set()
    assert listed("placed,confirmed") == {by_status["placed"], by_status["confirmed"]}
    assert listed("delivered, cancelled ,rejected") == {
        by_status[s] for s in ("delivered", "cancelled", "rejected")
    }
    assert listed(",ready,") == {by_status["ready"]}


def test_agent_id_filter(client, admin, make_agent, place_order):
    """agent_id= lists only the orders assigned to that agent (any status)."""
    a, b = make_agent(), make_agent()
    for_a = [
        walk_to(client, admin, place_order()["id"], "confirmed", agent=a)["id"],
        walk_to(client, admin, place_order()["id"], "delivered", agent=a)["id"],
    ]
    for_b = [walk_to(client, admin, place_order()["id"], "ready", agent=b)["id"]]
    place_order()  # unassigned

    def listed(agent_id: str) -> list[str]:
        response = client.get(f"{API}/orders", query_string={"agent_id": agent_id}, headers=admin.headers)
        assert response.status_code == 200, response.json
        return [o["id"] for o in response.json["orders"]]

    assert listed(a.agent_id) == for_a[::-1]
    assert listed(b.agent_id) == for_b
    assert listed("agt_000000000000") == []
    # Reassigning moves the order between the filtered lists.
    oid = for_a[0]
    assert assign(client, admin, oid, b.agent_id).status_code == 200
    assert listed(a.agent_id) == [for_a[1]]
    assert sorted(listed(b.agent_id)) == sorted([*for_b, oid])


def test_q_searches_id_name_and_phone(client, admin, place_order):
    """q= matches the exact order id, or a substring of the customer's name or phone."""
    ann = place_order(customer={"name": "Ann Lee", "phone": "+1 555 0101", "address": "A St"})
    bob = place_order(customer={"name": "Bob Stone", "phone": "+44 20 7946 0958", "address": "B"})
    zoe = place_order(customer={"name": "Zoë 東京", "phone": "+81 3 1234 5678", "address": "C"})

    def search(q: str) -> set[str]:
        response = client.get(f"{API}/orders", query_string={"q": q}, headers=admin.headers)
        assert response.status_code == 200, response.json
        return {o["id"] for o in response.json["orders"]}

    assert search(ann["id"]) == {ann["id"]}
    assert search(f"  {bob['id']} ") == {bob["id"]}
    assert search("Stone") == {bob["id"]}
    assert search("stone") == {bob["id"]}  # case-insensitive for ASCII
    assert search("Lee") == {ann["id"]}
    assert search("東京") == {zoe["id"]}
    assert search("7946") == {bob["id"]}
    assert search("555 01") == {ann["id"]}
    assert search("+") == {ann["id"], bob["id"], zoe["id"]}
    assert search("nobody") == set()
    # LIKE wildcards are matched literally.
    assert search("%") == set()
    assert search("_") == set()
    # A prefix of an id is not an id match.
    assert search(ann["id"][:-2]) == set()


def test_filters_combine(client, admin, make_agent, place_order):
    """status, agent_id and q narrow the list together."""
    agent = make_agent()
    target = walk_to(
        client,
        admin,
        place_order(customer={"name": "Ann", "phone": "+1 555 0101", "address": "x"})["id"],
        "ready",
        agent=agent,
    )
    walk_to(
        client,
        admin,
        place_order(customer={"name": "Ann", "phone": "+1 555 0101", "address": "x"})["id"],
        "confirmed",
        agent=agent,
    )
    place_order(customer={"name": "Ann", "phone": "+1 555 0101", "address": "x"})
    response = client.get(
        f"{API}/orders",
        query_string={"status": "ready,placed", "agent_id": agent.agent_id, "q": "Ann"},
        headers=admin.headers,
    )
    assert [o["id"] for o in response.json["orders"]] == [target["id"]]


# --- GET /events ----------------------------------------------------------------------


def _make_some_history(client, admin, make_agent, place_order) -> None:
    agent = make_agent()
    first = place_order()
    walk_to(client, admin, first["id"], "picked_up", agent=agent)
    second = place_order()
    set_status(client, admin, second["id"], "rejected")
    place_order()


def test_events_are_admin_only(client, admin, make_customer, make_agent):
    """GET /events needs an admin token: 401 without one, 403 for customers and agents."""
    customer, agent = make_customer(), make_agent()
    response = client.get(f"{API}/events")
    assert_problem(response, 401)
    assert_problem(client.get(f"{API}/events", headers=customer.headers), 403)
    assert_problem(client.get(f"{API}/events", headers=agent.headers), 403)
    assert client.get(f"{API}/events", headers=admin.headers).status_code == 200


def test_events_are_the_outbox_in_commit_order_without_duplicates(client, admin, make_agent, place_order):
    """GET /events is the outbox minus orders/new copies, in id order, with rising cursors."""
    _make_some_history(client, admin, make_agent, place_order)
    response = client.get(f"{API}/events", query_string={"limit": 1000}, headers=admin.headers)
    assert response.status_code == 200
    events = response.json["events"]
    rows = [r for r in outbox() if r["kind"] != "new"]
    assert len(rows) < len(outbox())  # there were orders/new rows to leave out
    assert [(e["cursor"], e["topic"], e["payload"]) for e in events] == [
        (r["id"], r["topic"], r["payload"]) for r in rows
    ]
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors))
    assert response.json["next_cursor"] == cursors[-1]
    assert "orders/new" not in {e["topic"] for e in events}
    event_ids = [e["payload"]["event_id"] for e in events]
    assert len(event_ids) == len(set(event_ids))  # each event once
    created = [e for e in events if e["payload"]["event"] == "order.created"]
    assert len(created) == 3
    # Per order, versions only go up.
    versions: dict[str, int] = {}
    for event in events:
        order = event["payload"].get("order")
        if order:
            assert order["version"] > versions.get(order["id"], 0)
            versions[order["id"]] = order["version"]


def test_events_after_cursor_pages_through_everything_once(client, admin, make_agent, place_order):
    """Paging with after=next_cursor returns every event once; the end is an empty page."""
    _make_some_history(client, admin, make_agent, place_order)
    everything = client.get(f"{API}/events", query_string={"limit": 1000}, headers=admin.headers).json[
        "events"
    ]
    seen: list[dict] = []
    after = 0
    while True:
        page = client.get(
            f"{API}/events", query_string={"after": after, "limit": 2}, headers=admin.headers
        ).json
        assert len(page["events"]) <= 2
        if not page["events"]:
            assert page["next_cursor"] == after
            break
        assert all(e["cursor"] > after for e in page["events"])
        seen += page["events"]
        after = page["next_cursor"]
    assert seen == everything
    # New events after the last cursor show up on the next read, and only they.
    newest = place_order()
    page = client.get(f"{API}/events", query_string={"after": after}, headers=admin.headers).json
    assert [(e["topic"], e["payload"]["event"]) for e in page["events"]] == [
        (f"orders/{newest['id']}/status", "order.created")
    ]
    # A cursor beyond the end is an empty page, not an error.
    page = client.get(f"{API}/events", query_string={"after": after + 1000}, headers=admin.headers).json
    assert page == {"events": [], "next_cursor": after + 1000}
