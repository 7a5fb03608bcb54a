"""Bad input on the write endpoints and GET /orders: the right 4xx problem, nothing written."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import order_body
from tests.helpers import (
    API,
    assert_problem,
    get_order,
    nothing_written,
    outbox,
    set_status,
)

# --- every write endpoint: body framing (JSON, media type, size) -----------

WRITE_ENDPOINTS = (
    "create_order",
    "change_status",
    "assign_agent",
    "update_agent",
    "create_agent",
    "create_user",
    "signup",
    "login",
)


@pytest.fixture
def endpoint(client, admin, place_order, make_agent):
    """Build (method, url, headers, valid body) for a write endpoint, creating what it needs."""

    def build(name: str) -> tuple[str, str, dict, dict]:
        if name == "create_order":
            return "POST", f"{API}/orders", admin.headers, order_body()
        if name == "change_status":
            order = place_order()
            return "PATCH", f"{API}/orders/{order['id']}/status", admin.headers, {
                "status": "confirmed"
            }
        if name == "assign_agent":
            order = place_order()
            agent = make_agent()
            return "PUT", f"{API}/orders/{order['id']}/agent", admin.headers, {
                "agent_id": agent.agent_id
            }
        if name == "update_agent":
            agent = make_agent()
            return "PATCH", f"{API}/agents/{agent.agent_id}", admin.headers, {"name": "New"}
        if name == "create_agent":
            return "POST", f"{API}/agents", admin.headers, {
                "name": "Ann", "username": "ann", "password": "password-1"
            }
        if name == "create_user":
            return "POST", f"{API}/users", admin.headers, {
                "username": "boss", "password": "password-1", "role": "admin"
            }
        if name == "signup":
            return "POST", f"{API}/auth/signup", {}, {"username": "zed", "password": "password-1"}
        if name == "login":
            return "POST", f"{API}/auth/token", {}, {
                "username": "admin", "password": "admin-password-1"
            }
        raise AssertionError(name)

    return build


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_malformed_json_is_400(client, endpoint, name):
    """A body that is not valid JSON answers 400 naming the body, and writes nothing."""
    method, url, headers, _ = endpoint(name)
    for raw in ('{"status": ', "{bad json}", "{'single': 'quotes'}", b"\xff\xfe{"):
        with nothing_written():
            response = client.open(
                url,
                method=method,
                data=raw,
                headers={**headers, "Content-Type": "application/json"},
            )
            assert_problem(response, 400, "body")


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_wrong_content_type_is_415(client, endpoint, name):
    """A JSON body sent as another media type answers 415 naming Content-Type."""
    method, url, headers, body = endpoint(name)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        with nothing_written():
            response = client.open(
                url,
                method=method,
                data=json.dumps(body),
                headers={**headers, "Content-Type": content_type},
            )
            assert_problem(response, 415, "Content-Type")


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_oversized_body_is_413(client, endpoint, name):
    """A body over 64 KiB answers 413 before anything is parsed or written."""
    method, url, headers, body = endpoint(name)
    big = {**body, "padding": "x" * (64 * 1024 + 1)}
    with nothing_written():
        response = client.open(url, method=method, json=big, headers=headers)
        assert_problem(response, 413)


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_unknown_field_is_422(client, endpoint, name):
    """An unknown field in any write body is refused with 422 naming it (typos are errors)."""
    method, url, headers, body = endpoint(name)
    with nothing_written():
        response = client.open(url, method=method, json={**body, "surprise": 1}, headers=headers)
        assert_problem(response, 422, "surprise")


@pytest.mark.parametrize("name", WRITE_ENDPOINTS)
def test_body_must_be_a_json_object(client, endpoint, name):
    """A missing body, or JSON that is not an object, answers 422 naming the body."""
    method, url, headers, _ = endpoint(name)
    for raw in (None, "", "null", "[]", "1", '"text"', "true"):
        with nothing_written():
            kwargs = {} if raw is None else {"data": raw}
            response = client.open(
                url,
                method=method,
                headers={**headers, "Content-Type": "application/json"},
                **kwargs,
            )
            assert_problem(response, 422, "body")


def test_body_just_under_the_limit_is_validated_not_413(client, admin):
    """A body under 64 KiB reaches validation: an over-long notes field is a 422, not a 413."""
    with nothing_written():
        response = client.post(
            f"{API}/orders", json=order_body(notes="n" * 60_000), headers=admin.headers
        )
        assert_problem(response, 422, "notes")


def test_json_with_charset_is_accepted(client, admin):
    """application/json with a charset parameter is JSON."""
    response = client.post(
        f"{API}/orders",
        data=json.dumps(order_body()),
        headers={**admin.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.json


# --- POST /orders: fields ---------------------------------------------------


def _without(path: str) -> dict:
    body = copy.deepcopy(order_body())
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[leaf]
    return body


@pytest.mark.parametrize(
    "field",
    [
        "customer",
        "items",
        "customer.name",
        "customer.phone",
        "customer.address",
        "items.0.name",
        "items.0.quantity",
        "items.0.unit_price_cents",
    ],
)
def test_missing_order_field_is_422(client, admin, field):
    """A missing required order field answers 422 naming its dotted path."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=_without(field), headers=admin.headers)
        assert_problem(response, 422, field)


def _item(**overrides) -> dict:
    return {"name": "Margherita", "quantity": 2, "unit_price_cents": 1299, **overrides}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(items=[_item(quantity="2")]), "items.0.quantity"),
        (order_body(items=[_item(quantity=True)]), "items.0.quantity"),
        (order_body(items=[_item(quantity=False)]), "items.0.quantity"),
        (order_body(items=[_item(quantity=2.5)]), "items.0.quantity"),
        (order_body(items=[_item(quantity=2.0)]), "items.0.quantity"),
        (order_body(items=[_item(quantity=None)]), "items.0.quantity"),
        (order_body(items=[_item(quantity=[2])]), "items.0.quantity"),
        (order_body(items=[_item(unit_price_cents="1299")]), "items.0.unit_price_cents"),
        (order_body(items=[_item(unit_price_cents=12.99)]), "items.0.unit_price_cents"),
        (order_body(items=[_item(unit_price_cents=True)]), "items.0.unit_price_cents"),
        (order_body(items=[_item(), _item(name=7)]), "items.1.name"),
        (order_body(items={"0": _item()}), "items"),
        (order_body(items="Margherita"), "items"),
        (order_body(customer="Zoë, 1 Main St"), "customer"),
        (order_body(customer={"name": 42, "phone": "+1 555 0100", "address": "x"}), "customer.name"),
        (order_body(customer={"name": "Zoë", "phone": 15550100, "address": "x"}), "customer.phone"),
        (order_body(notes=5), "notes"),
        (order_body(notes=None), "notes"),
        (order_body(currency=840), "currency"),
    ],
)
def test_wrong_typed_order_field_is_422(client, admin, body, field):
    """Wrong JSON types are refused, never coerced ("2", true, 2.5 are not quantities)."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


@pytest.mark.parametrize("quantity", [0, -1, -1000, 1001, 10**12, 10**30])
def test_out_of_range_quantity_is_422(client, admin, quantity):
    """Quantities must be 1..1000: zero, negative and huge ones answer 422."""
    with nothing_written():
        response = client.post(
            f"{API}/orders", json=order_body(items=[_item(quantity=quantity)]), headers=admin.headers
        )
        assert_problem(response, 422, "items.0.quantity")


@pytest.mark.parametrize("price", [-1, -1299, 10_000_001, 10**18, 10**30])
def test_out_of_range_price_is_422(client, admin, price):
    """Unit prices must be 0..10,000,000 cents: negative and huge ones answer 422."""
    with nothing_written():
        response = client.post(
            f"{API}/orders",
            json=order_body(items=[_item(unit_price_cents=price)]),
            headers=admin.headers,
        )
        assert_problem(response, 422, "items.0.unit_price_cents")


def test_non_finite_number_is_refused(client, admin):
    """A number that overflows to infinity is not a quantity (400 or 422, never 500)."""
    raw = json.dumps(order_body()).replace('"quantity": 2', '"quantity": 1e400')
    with nothing_written():
        response = client.post(
            f"{API}/orders", data=raw, headers={**admin.headers, "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422)
        assert_problem(response, response.status_code)


def test_quantity_and_price_bounds_are_inclusive(client, admin):
    """Quantity 1 and 1000 and prices 0 (a free item) and 10,000,000 are accepted; total adds up."""
    items = [
        _item(name="Free drink", quantity=1, unit_price_cents=0),
        _item(name="Bulk", quantity=1000, unit_price_cents=10_000_000),
    ]
    response = client.post(f"{API}/orders", json=order_body(items=items), headers=admin.headers)
    assert response.status_code == 201, response.json
    assert response.json["total_cents"] == 1000 * 10_000_000
    assert response.json["items"] == items


def test_empty_items_is_422(client, admin):
    """An order needs at least one item."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=order_body(items=[]), headers=admin.headers)
        assert_problem(response, 422, "items")


def test_too_many_items_is_422(client, admin):
    """More than 100 items answers 422 naming items; exactly 100 is accepted."""
    with nothing_written():
        response = client.post(
            f"{API}/orders",
            json=order_body(items=[_item(name=f"i{n}") for n in range(101)]),
            headers=admin.headers,
        )
        assert_problem(response, 422, "items")
    response = client.post(
        f"{API}/orders",
        json=order_body(items=[_item(name=f"i{n}") for n in range(100)]),
        headers=admin.headers,
    )
    assert response.status_code == 201, response.json
    assert [i["name"] for i in response.json["items"]] == [f"i{n}" for n in range(100)]


@pytest.mark.parametrize("currency", ["usd", "US", "EURO", "", "U$D", "€€€", "12 "])
def test_bad_currency_is_422(client, admin, currency):
    """Currency must be three upper-case letters (ISO 4217 style)."""
    with nothing_written():
        response = client.post(
            f"{API}/orders", json=order_body(currency=currency), headers=admin.headers
        )
        assert_problem(response, 422, "currency")


def test_good_currency_is_kept(client, admin):
    """A valid currency code is stored and returned."""
    response = client.post(f"{API}/orders", json=order_body(currency="EUR"), headers=admin.headers)
    assert response.status_code == 201
    assert response.json["currency"] == "EUR"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(extra=1), "extra"),
        (order_body(customer={**order_body()["customer"], "email": "z@x"}), "customer.email"),
        (order_body(items=[_item(sku="M-1")]), "items.0.sku"),
        (order_body(status="delivered"), "status"),
        (order_body(total_cents=1), "total_cents"),
    ],
)
def test_unknown_order_field_is_422(client, admin, body, field):
    """Unknown fields, top-level or nested, are refused with 422 naming them."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(customer={"name": "", "phone": "+1 555 0100", "address": "x"}), "customer.name"),
        (order_body(customer={"name": "   ", "phone": "+1 555 0100", "address": "x"}),
         "customer.name"),
        (order_body(customer={"name": "n" * 201, "phone": "+1 555 0100", "address": "x"}),
         "customer.name"),
        (order_body(customer={"name": "Zoë", "phone": "call me", "address": "x"}), "customer.phone"),
        (order_body(customer={"name": "Zoë", "phone": "12", "address": "x"}), "customer.phone"),
        (order_body(customer={"name": "Zoë", "phone": "+1 555 0100", "address": ""}),
         "customer.address"),
        (order_body(customer={"name": "Zoë", "phone": "+1 555 0100", "address": "a" * 501}),
         "customer.address"),
        (order_body(items=[_item(name="")]), "items.0.name"),
        (order_body(notes="n" * 1001), "notes"),
    ],
)
def test_bad_strings_are_422(client, admin, body, field):
    """Blank, over-long or malformed strings answer 422 naming the field."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


UNICODE_CUSTOMER = {
    "name": "Zoë 東京 🍕",
    "phone": "+81 (3) 1234-5678",
    "address": "東京都渋谷区 1-2-3, Ålesund ✓ 🏠",
}
UNICODE_ITEMS = [{"name": "Café crème ☕ / ピザ", "quantity": 3, "unit_price_cents": 450}]
UNICODE_NOTES = "بدون بصل — sans oignon 🧅"


@pytest.mark.parametrize("ascii_escaped", [True, False])
def test_unicode_is_accepted_and_returned_intact(client, admin, ascii_escaped):
    """Non-ASCII names, addresses, items and notes round-trip unchanged (escaped or raw UTF-8)."""
    body = order_body(customer=UNICODE_CUSTOMER, items=UNICODE_ITEMS, notes=UNICODE_NOTES)
    raw = json.dumps(body, ensure_ascii=ascii_escaped).encode("utf-8")
    response = client.post(
        f"{API}/orders", data=raw, headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.json
    for order in (response.json, get_order(client, admin, response.json["id"])):
        assert order["customer"] == UNICODE_CUSTOMER
        assert order["items"] == UNICODE_ITEMS
        assert order["notes"] == UNICODE_NOTES
        assert order["total_cents"] == 1350
    # The event the relay will publish carries the same text.
    (status_row,) = outbox(topic=f"orders/{response.json['id']}/status")
    assert status_row["payload"]["order"]["customer"] == UNICODE_CUSTOMER
    assert status_row["payload"]["order"]["items"] == UNICODE_ITEMS
    # And a search by a non-ASCII substring finds it.
    found = client.get(f"{API}/orders", query_string={"q": "東京"}, headers=admin.headers)
    assert [o["id"] for o in found.json["orders"]] == [response.json["id"]]


def test_strings_are_trimmed(client, admin):
    """Leading and trailing whitespace is trimmed from names, phone, address and notes."""
    body = order_body(
        customer={"name": "  Zoë  ", "phone": " +1 555 0100 ", "address": "\t1 Main St\n"},
        items=[_item(name=" Margherita ")],
        notes="  ring  ",
    )
    response = client.post(f"{API}/orders", json=body, headers=admin.headers)
    assert response.status_code == 201, response.json
    assert response.json["customer"] == {"name": "Zoë", "phone": "+1 555 0100", "address": "1 Main St"}
    assert response.json["items"][0]["name"] == "Margherita"
    assert response.json["notes"] == "ring"


# --- unknown resources -------------------------------------------------------


def test_unknown_order_is_404(client, admin, make_agent):
    """Every /orders/<id> endpoint answers 404 for an id that does not exist, writing nothing."""
    agent = make_agent()
    missing = "ord_000000000000"
    with nothing_written():
        assert_problem(client.get(f"{API}/orders/{missing}", headers=admin.headers), 404)
        assert_problem(client.get(f"{API}/orders/{missing}/history", headers=admin.headers), 404)
        assert_problem(set_status(client, admin, missing, "confirmed"), 404)
        assert_problem(
            client.put(
                f"{API}/orders/{missing}/agent",
                json={"agent_id": agent.agent_id},
                headers=admin.headers,
            ),
            404,
        )
        assert_problem(client.delete(f"{API}/orders/{missing}/agent", headers=admin.headers), 404)


def test_unknown_agent_is_404(client, admin):
    """/agents/<id> endpoints answer 404 for an agent that does not exist."""
    missing = "agt_000000000000"
    with nothing_written():
        assert_problem(client.get(f"{API}/agents/{missing}", headers=admin.headers), 404)
        assert_problem(client.get(f"{API}/agents/{missing}/orders", headers=admin.headers), 404)
        assert_problem(
            client.patch(f"{API}/agents/{missing}", json={"name": "X"}, headers=admin.headers), 404
        )


def test_assigning_unknown_agent_is_422(client, admin, place_order):
    """PUT /orders/<id>/agent with an agent that does not exist answers 422 naming agent_id."""
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    with nothing_written():
        response = client.put(
            f"{API}/orders/{order['id']}/agent",
            json={"agent_id": "agt_000000000000"},
            headers=admin.headers,
        )
        assert_problem(response, 422, "agent_id")


def test_assigning_deactivated_agent_is_422(client, admin, place_order, make_agent):
    """A deactivated agent cannot be assigned: 422 naming agent_id."""
    agent = make_agent()
    response = client.patch(
        f"{API}/agents/{agent.agent_id}", json={"active": False}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    with nothing_written():
        response = client.put(
            f"{API}/orders/{order['id']}/agent",
            json={"agent_id": agent.agent_id},
            headers=admin.headers,
        )
        assert_problem(response, 422, "agent_id")


# --- other write bodies ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "status"),
        ({"status": "shipped"}, "status"),
        ({"status": "CONFIRMED"}, "status"),
        ({"status": 1}, "status"),
        ({"status": None}, "status"),
        ({"status": "confirmed", "reason": "r" * 501}, "reason"),
        ({"status": "confirmed", "reason": 5}, "reason"),
        ({"status": "confirmed", "force": "yes"}, "force"),
        ({"status": "confirmed", "force": 1}, "force"),
        ({"status": "confirmed", "agent_id": "agt_x"}, "agent_id"),
    ],
)
def test_bad_status_change_body_is_422(client, admin, place_order, body, field):
    """PATCH /orders/<id>/status validates its body and names the bad field."""
    order = place_order()
    with nothing_written():
        response = client.patch(
            f"{API}/orders/{order['id']}/status", json=body, headers=admin.headers
        )
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "agent_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": 123}, "agent_id"),
        ({"agent_id": None}, "agent_id"),
        ({"agent_id": "a" * 33}, "agent_id"),
        ({"agent_id": "agt_x", "reason": "r" * 501}, "reason"),
    ],
)
def test_bad_assign_body_is_422(client, admin, place_order, body, field):
    """PUT /orders/<id>/agent validates its body and names the bad field."""
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    with nothing_written():
        response = client.put(f"{API}/orders/{order['id']}/agent", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"active": "no"}, "active"),
        ({"active": 0}, "active"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"phone": "p" * 41}, "phone"),
        ({"username": "renamed"}, "username"),
    ],
)
def test_bad_agent_patch_body_is_422(client, admin, make_agent, body, field):
    """PATCH /agents/<id> validates its body and names the bad field."""
    agent = make_agent()
    with nothing_written():
        response = client.patch(f"{API}/agents/{agent.agent_id}", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Ann", "username": "a b", "password": "password-1"}, "username"),
        ({"name": "Ann", "username": "ab", "password": "password-1"}, "username"),
        ({"name": "Ann", "username": "ann", "password": "short"}, "password"),
        ({"name": "", "username": "ann", "password": "password-1"}, "name"),
        ({"username": "ann", "password": "password-1"}, "name"),
    ],
)
def test_bad_agent_create_body_is_422(client, admin, body, field):
    """POST /agents validates its body and names the bad field."""
    with nothing_written():
        response = client.post(f"{API}/agents", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/auth/signup", {"username": "ab", "password": "password-1"}, "username"),
        ("/auth/signup", {"username": "bad name!", "password": "password-1"}, "username"),
        ("/auth/signup", {"username": "newbie", "password": "short"}, "password"),
        ("/auth/signup", {"username": "newbie"}, "password"),
        ("/auth/signup", {"username": "newbie", "password": "password-1", "role": "admin"}, "role"),
        ("/users", {"username": "boss", "password": "password-1"}, "role"),
        ("/users", {"username": "boss", "password": "password-1", "role": "agent"}, "role"),
        ("/users", {"username": "boss", "password": "password-1", "role": "root"}, "role"),
        ("/auth/token", {"username": "admin"}, "password"),
        ("/auth/token", {"password": "x"}, "username"),
        ("/auth/token", {"username": "", "password": "x"}, "username"),
    ],
)
def test_bad_user_body_is_422(client, admin, url, body, field):
    """Sign-up, user creation and login validate their bodies and name the bad field."""
    with nothing_written():
        response = client.post(f"{API}{url}", json=body, headers=admin.headers)
        assert_problem(response, 422, field)


# --- headers -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "3, 4", "1.0", "1234567890", "", "W/abc"])
def test_bad_if_match_is_400(client, admin, place_order, make_agent, value):
    """An If-Match that is not a version number answers 400 naming If-Match on every write."""
    agent = make_agent()
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    headers = {**admin.headers, "If-Match": value}
    with nothing_written():
        for response in (
            client.patch(
                f"{API}/orders/{order['id']}/status", json={"status": "preparing"}, headers=headers
            ),
            client.put(
                f"{API}/orders/{order['id']}/agent",
                json={"agent_id": agent.agent_id},
                headers=headers,
            ),
            client.delete(f"{API}/orders/{order['id']}/agent", headers=headers),
        ):
            assert_problem(response, 400, "If-Match")


@pytest.mark.parametrize("value", ["", "k" * 201, "clé-ünïcode", "tab\there", "bell\x07"])
def test_bad_idempotency_key_is_400(client, admin, value):
    """An Idempotency-Key that is empty, too long or not printable ASCII answers 400."""
    with nothing_written():
        response = client.post(
            f"{API}/orders",
            json=order_body(),
            headers={**admin.headers, "Idempotency-Key": value},
        )
        assert_problem(response, 400, "Idempotency-Key")


def test_longest_idempotency_key_is_accepted(client, admin):
    """A 200-character printable key is accepted."""
    response = client.post(
        f"{API}/orders",
        json=order_body(),
        headers={**admin.headers, "Idempotency-Key": "k" * 200},
    )
    assert response.status_code == 201, response.json


# --- GET /orders query -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"status": "shipped"}, "status"),
        ({"status": "placed,shipped"}, "status"),
        ({"status": "PLACED"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "!!!!"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # base64 of "[]"
        ({"cursor": "eyJhIjoxfQ"}, "cursor"),  # base64 of {"a":1}
        ({"cursor": "WyJub3QgYSBkYXRlIiwgIm9yZF94Il0"}, "cursor"),  # ["not a date", "ord_x"]
        ({"cursor": "WzEsIDJd"}, "cursor"),  # [1, 2]
        ({"cursor": "c" * 201}, "cursor"),
        ({"q": "q" * 201}, "q"),
        ({"agent_id": "a" * 33}, "agent_id"),
        ({"sort": "asc"}, "sort"),
    ],
)
def test_bad_list_query_is_422(client, admin, place_order, query, field):
    """GET /orders refuses bad limit, status, cursor and unknown parameters, naming them."""
    place_order()
    response = client.get(f"{API}/orders", query_string=query, headers=admin.headers)
    assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "abc"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"since": "1"}, "since"),
    ],
)
def test_bad_events_query_is_422(client, admin, query, field):
    """GET /events refuses a bad after, limit or unknown parameter, naming it."""
    response = client.get(f"{API}/events", query_string=query, headers=admin.headers)
    assert_problem(response, 422, field)
