"""Idempotency-Key on POST /orders (ARCHITECTURE.md, delivery guarantee 8)."""

from __future__ import annotations

from tests.helpers import API, assert_problem, counts, nothing_written, outbox, set_status


def _post(client, actor, body: dict, key: str | None):
    headers = dict(actor.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"{API}/orders", json=body, headers=headers)


def _created_rows(order_id: str) -> list[dict]:
    return [r for r in outbox(event="order.created") if r["order_id"] == order_id]


def test_same_key_and_body_returns_the_same_order(client, make_customer, menu):
    """Same key and body: the original order again (201, replayed), one row, one event."""
    customer = make_customer()
    before = counts()
    first = _post(client, customer, menu.order(), "key-1")
    assert first.status_code == 201, first.json
    assert "Idempotent-Replayed" not in first.headers
    after_first = counts()

    second = _post(client, customer, menu.order(), "key-1")
    assert second.status_code == 201, second.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json == first.json
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["ETag"] == first.headers["ETag"]
    assert counts() == after_first  # the replay wrote nothing

    assert after_first["Order"] == before["Order"] + 1
    assert after_first["OrderItem"] == before["OrderItem"] + 1
    assert after_first["OrderHistory"] == before["OrderHistory"] + 1
    assert after_first["IdempotencyKey"] == before["IdempotencyKey"] + 1
    rows = _created_rows(first.json["id"])
    assert sorted(r["topic"] for r in rows) == sorted(["orders/new", f"orders/{first.json['id']}/status"])
    assert len({r["event_id"] for r in rows}) == 1  # one event on two topics
    assert len(outbox(event="order.created")) == 2


def test_replay_after_the_order_moved_on_still_returns_it(client, admin, make_customer, menu):
    """A late retry returns the original order (in its current state), creating nothing."""
    customer = make_customer()
    first = _post(client, customer, menu.order(), "late-retry")
    assert set_status(client, admin, first.json["id"], "confirmed").status_code == 200
    with nothing_written():
        again = _post(client, customer, menu.order(), "late-retry")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json["id"] == first.json["id"]
        assert again.json["status"] == "confirmed"


def test_replay_after_the_item_sold_out_or_changed_price_returns_the_original(
    client, admin, make_customer, menu
):
    """The lines are priced before the order's transaction; a retry whose item has since sold
    out or changed price is still the original order (201, replayed), not a refusal."""
    customer = make_customer()
    first = _post(client, customer, menu.order(), "before-the-change")
    assert first.status_code == 201, first.json
    changed = client.patch(
        f"{API}/catalog/items/{menu.margherita}", json={"price_cents": 1500}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.json
    with nothing_written():
        again = _post(client, customer, menu.order(), "before-the-change")
        assert again.status_code == 201, again.json
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json == first.json
    sold_out = client.patch(
        f"{API}/catalog/items/{menu.margherita}", json={"available": False}, headers=admin.headers
    )
    assert sold_out.status_code == 200, sold_out.json
    with nothing_written():
        again = _post(client, customer, menu.order(), "before-the-change")
        assert again.status_code == 201, again.json
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json["id"] == first.json["id"]
        # the positive control: the same body under a new key is refused, as sold out
        fresh = _post(client, customer, menu.order(), "after-the-change")
        assert assert_problem(fresh, 409, "items.0.item_id")["type"].endswith("item-unavailable")


def test_equivalent_body_is_the_same_request(client, make_customer, menu):
    """Key order, surrounding whitespace and explicit defaults do not make a body different."""
    customer = make_customer()
    first = _post(client, customer, menu.order(), "equiv")
    body = menu.order(currency="EUR")
    body = dict(reversed(list(body.items())))
    body["customer"] = {"address": " 1 Main St ", "phone": "+1 555 0100", "name": "Zoë Ångström"}
    with nothing_written():
        again = _post(client, customer, body, "equiv")
        assert again.status_code == 201, again.json
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json["id"] == first.json["id"]


def test_same_key_with_a_different_body_is_422(client, make_customer, menu):
    """Reusing a key with another body answers 422 naming Idempotency-Key and writes nothing."""
    customer = make_customer()
    first = _post(client, customer, menu.order(), "key-2")
    assert first.status_code == 201
    changed = [
        menu.order(notes="leave at the door"),
        menu.order(items=[menu.line(quantity=3)]),
        menu.order(currency="USD"),
        menu.order(customer={"name": "Someone Else", "phone": "+1 555 0100", "address": "x"}),
    ]
    with nothing_written():
        for body in changed:
            problem = assert_problem(_post(client, customer, body, "key-2"), 422, "Idempotency-Key")
            assert "Idempotency-Key" in problem["detail"]
    # The key still replays its original request.
    again = _post(client, customer, menu.order(), "key-2")
    assert again.status_code == 201
    assert again.json["id"] == first.json["id"]


def test_keys_are_scoped_per_user(client, admin, make_customer, menu):
    """The same key used by two customers (or a customer and an admin) makes separate orders."""
    alice, bob = make_customer(), make_customer()
    before = counts()
    a = _post(client, alice, menu.order(), "shared-key")
    b = _post(client, bob, menu.order(notes="other body, same key"), "shared-key")
    c = _post(client, admin, menu.order(), "shared-key")
    for response in (a, b, c):
        assert response.status_code == 201, response.json
        assert "Idempotent-Replayed" not in response.headers
    assert len({a.json["id"], b.json["id"], c.json["id"]}) == 3
    assert counts()["Order"] == before["Order"] + 3
    assert counts()["IdempotencyKey"] == before["IdempotencyKey"] + 3
    # Each user's retry finds its own order.
    assert _post(client, alice, menu.order(), "shared-key").json["id"] == a.json["id"]
    assert (
        _post(client, bob, menu.order(notes="other body, same key"), "shared-key").json["id"] == b.json["id"]
    )
    # Bob cannot read Alice's order through her key.
    assert_problem(client.get(f"{API}/orders/{a.json['id']}", headers=bob.headers), 404)


def test_different_keys_or_no_key_make_new_orders(client, make_customer, menu):
    """Without a key, or with a new key, the same body is a new order."""
    customer = make_customer()
    ids = {
        _post(client, customer, menu.order(), None).json["id"],
        _post(client, customer, menu.order(), None).json["id"],
        _post(client, customer, menu.order(), "k-a").json["id"],
        _post(client, customer, menu.order(), "k-b").json["id"],
    }
    assert len(ids) == 4
    assert len(outbox(event="order.created", kind="new")) == 4


def test_rejected_request_does_not_consume_the_key(client, make_customer, menu):
    """A request refused by validation stores no key: the key then creates a fresh order."""
    customer = make_customer()
    with nothing_written():
        bad = _post(client, customer, menu.order(items=[]), "k-fresh")
        assert_problem(bad, 422, "items")
    good = _post(client, customer, menu.order(), "k-fresh")
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good.headers
