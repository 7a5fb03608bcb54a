"""Server-side prices: customers order catalog items by id; the server prices each line and
keeps a snapshot on the order; only admins add custom lines with a price; refusals name
the line's field and write nothing."""

from __future__ import annotations

from tests.conftest import order_body
from tests.helpers import API, assert_problem, get_order, nothing_written, outbox


def _place(client, actor, body):
    return client.post(f"{API}/orders", json=body, headers=actor.headers)


def test_the_total_is_the_catalogs(client, menu, make_customer):
    """Price plus the options' deltas, times the quantity, for every line; the lines keep
    the item's name, its unit price, its id and the options' names."""
    customer = make_customer()
    body = menu.order(
        items=[menu.line(quantity=2, option_ids=(menu.large, menu.basil)), menu.line(menu.tea, quantity=3)]
    )
    response = _place(client, customer, body)
    assert response.status_code == 201, response.json
    order = response.json
    assert order["items"] == [
        {
            "name": "Margherita",
            "quantity": 2,
            "unit_price_cents": 1299 + 100 + 300,
            "item_id": menu.margherita,
            "options": ["Extra basil", "Large"],  # in the catalog's order
        },
        {"name": "Tea", "quantity": 3, "unit_price_cents": 300, "item_id": menu.tea, "options": []},
    ]
    assert order["total_cents"] == 2 * 1699 + 3 * 300
    assert order["currency"] == "EUR"
    published = outbox(event="order.created", kind="status")[-1]["payload"]["order"]
    assert published["items"] == order["items"] and published["total_cents"] == order["total_cents"]


def test_a_later_price_change_never_alters_a_placed_order(client, admin, menu, make_customer, make_agent):
    """The order keeps the name and prices it was placed with, through the catalog's changes,
    the item's deletion and the order's own moves; a new order gets the new price."""
    customer = make_customer()
    placed = _place(client, customer, menu.order(items=[menu.line(option_ids=(menu.basil,))])).json
    h = admin.headers
    client.patch(
        f"{API}/catalog/items/{menu.margherita}",
        json={
            "price_cents": 1500,
            "name": "Margherita DOP",
            "options": [{"name": "Extra basil", "price_delta_cents": 200}],
        },
        headers=h,
    )
    assert (
        client.patch(
            f"{API}/orders/{placed['id']}/status", json={"status": "confirmed"}, headers=h
        ).status_code
        == 200
    )
    again = get_order(client, customer, placed["id"])
    assert again["items"] == placed["items"] and again["total_cents"] == placed["total_cents"] == 2 * 1399
    assert outbox(order_id=placed["id"], kind="status")[-1]["payload"]["order"]["items"] == placed["items"]
    listed = client.get(f"{API}/orders", headers=customer.headers).json["orders"]
    assert listed[0]["items"] == placed["items"]

    newer = _place(client, customer, menu.order(items=[menu.line(quantity=1)])).json
    assert (newer["items"][0]["name"], newer["total_cents"]) == ("Margherita DOP", 1500)
    assert client.delete(f"{API}/catalog/items/{menu.margherita}", headers=h).status_code == 204
    assert get_order(client, customer, placed["id"])["items"] == placed["items"]


def test_a_customers_price_is_refused(client, menu, make_customer):
    """unit_price_cents from a customer: 422 naming it, on a custom line or beside an item id."""
    customer = make_customer()
    with nothing_written():
        assert_problem(_place(client, customer, order_body()), 422, "items.0.unit_price_cents")
        cheap = {**menu.line(), "unit_price_cents": 1}
        assert_problem(
            _place(client, customer, menu.order(items=[menu.line(), cheap])), 422, "items.1.unit_price_cents"
        )
        named = {"name": "Margherita", "quantity": 1}
        assert_problem(_place(client, customer, menu.order(items=[named])), 422, "items.0.item_id")


def test_an_admins_custom_line_is_accepted(client, admin, menu):
    """An admin (a phone order) may add custom lines with a price, beside catalog lines."""
    custom = {"name": "Birthday candle", "quantity": 1, "unit_price_cents": 50}
    response = _place(client, admin, menu.order(items=[menu.line(quantity=1), custom]))
    assert response.status_code == 201, response.json
    assert response.json["items"][1] == {"name": "Birthday candle", "quantity": 1, "unit_price_cents": 50}
    assert response.json["total_cents"] == 1299 + 50
    old_shape = _place(client, admin, order_body())  # what loadgen, bench and the old tests send
    assert (old_shape.status_code, old_shape.json["total_cents"]) == (201, 2598)
    with nothing_written():
        assert_problem(
            _place(client, admin, menu.order(items=[{"name": "x", "quantity": 1}])),
            422,
            "items.0.unit_price_cents",
        )
        assert_problem(
            _place(client, admin, menu.order(items=[{"quantity": 1, "unit_price_cents": 5}])),
            422,
            "items.0.name",
        )
        with_options = {**custom, "option_ids": [menu.basil]}
        assert_problem(_place(client, admin, menu.order(items=[with_options])), 422, "items.0.option_ids")
        priced_item = {**menu.line(), "unit_price_cents": 1}
        assert_problem(
            _place(client, admin, menu.order(items=[priced_item])), 422, "items.0.unit_price_cents"
        )


def test_unknown_and_unavailable_items_are_refused_and_write_nothing(client, admin, menu, make_customer):
    """Unknown item: 422 naming items[i].item_id; sold out: 409 naming the item; an option
    of another item, an unknown one or one given twice: 422 naming it."""
    customer = make_customer()
    with nothing_written():
        unknown = menu.order(items=[menu.line(), menu.line("itm_nothere")])
        assert (
            "itm_nothere"
            in assert_problem(_place(client, customer, unknown), 422, "items.1.item_id")["detail"]
        )
        sold_out = menu.order(items=[menu.line(), menu.line(menu.soup)])
        problem = assert_problem(_place(client, customer, sold_out), 409, "items.1.item_id")
        assert problem["item_id"] == menu.soup and "Soup" in problem["detail"]
        foreign = menu.order(items=[menu.line(menu.tea, option_ids=(menu.basil,))])
        assert_problem(_place(client, customer, foreign), 422, "items.0.option_ids.0")
        assert_problem(
            _place(client, customer, menu.order(items=[menu.line(option_ids=("opt_x",))])),
            422,
            "items.0.option_ids.0",
        )
        twice = menu.order(items=[menu.line(option_ids=(menu.basil, menu.basil))])
        assert_problem(_place(client, customer, twice), 422, "items.0.option_ids.1")
        assert_problem(_place(client, customer, menu.order(currency="USD")), 422, "currency")
        assert_problem(
            _place(client, customer, menu.order(items=[{**menu.line(), "item_id": ""}])),
            422,
            "items.0.item_id",
        )
    # Back on sale: the same body goes through.
    client.patch(f"{API}/catalog/items/{menu.soup}", json={"available": True}, headers=admin.headers)
    assert _place(client, customer, sold_out).status_code == 201


def test_old_orders_keep_their_lines(client, admin, menu):
    """A line placed before the catalog (no item id) is published as it always was."""
    order = _place(client, admin, order_body()).json
    assert order["items"] == [{"name": "Margherita", "quantity": 2, "unit_price_cents": 1299}]
    assert "item_id" not in outbox(order_id=order["id"], kind="status")[-1]["payload"]["order"]["items"][0]
