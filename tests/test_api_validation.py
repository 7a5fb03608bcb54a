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
def endpoints(client, admin, place_order, make_agent) -> dict[str, tuple[str, str, dict, dict]]:
    """Every write endpoint as name -> (method, url, headers, a valid body)."""
    order = place_order()
    agent = make_agent()
    return {
        "create_order": ("POST", f"{API}/orders", admin.headers, order_body()),
        "change_status": (
            "PATCH",
            f"{API}/orders/{order['id']}/status",
            admin.headers,
            {"status": "confirmed"},
        ),
        "assign_agent": (
            "PUT",
            f"{API}/orders/{order['id']}/agent",
            admin.headers,
            {"agent_id": agent.agent_id},
        ),
        "update_agent": ("PATCH", f"{API}/agents/{agent.agent_id}", admin.headers, {"name": "N"}),
        "create_agent": (
            "POST",
            f"{API}/agents",
            admin.headers,
            {"name": "Ann", "username": "ann", "password": "password-1"},
        ),
        "create_user": (
            "POST",
            f"{API}/users",
            admin.headers,
            {"username": "boss", "password": "password-1", "role": "admin"},
        ),
        "signup": ("POST", f"{API}/auth/signup", {}, {"username": "zed", "password": "password-1"}),
        "login": ("POST", f"{API}/auth/token", {}, {"username": "admin", "password": "admin-password-1"}),
    }


def test_every_write_endpoint_is_covered(endpoints):
    """The framing tests below cover every write endpoint of the API."""
    assert set(endpoints) == set(WRITE_ENDPOINTS)


def test_malformed_json_is_400(client, endpoints, subtests):
    """A body that is not valid JSON (or nested deeper than the parser follows) answers 400
    naming the body, never a 500, and writes nothing."""
    deep = ("[" * 50_000, '{"a":' * 5_000 + "1" + "}" * 5_000)
    for name, (method, url, headers, _) in endpoints.items():
        for raw in ('{"status": ', "{bad json}", "{'single': 'quotes'}", b"\xff\xfe{", *deep):
            with subtests.test(endpoint=name, body=raw[:20]), nothing_written():
                response = client.open(
                    url,
                    method=method,
                    data=raw,
                    headers={**headers, "Content-Type": "application/json"},
                )
                assert_problem(response, 400, "body")


def test_wrong_content_type_is_415(client, endpoints, subtests):
    """A JSON body sent as another media type answers 415 naming Content-Type."""
    for name, (method, url, headers, body) in endpoints.items():
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
            with subtests.test(endpoint=name, content_type=content_type), nothing_written():
                response = client.open(
                    url,
                    method=method,
                    data=json.dumps(body),
                    headers={**headers, "Content-Type": content_type},
                )
                assert_problem(response, 415, "Content-Type")


def test_oversized_body_is_413(client, endpoints, subtests):
    """A body over 64 KiB answers 413 before anything is parsed or written."""
    for name, (method, url, headers, body) in endpoints.items():
        big = {**body, "padding": "x" * (64 * 1024 + 1)}
        with subtests.test(endpoint=name), nothing_written():
            response = client.open(url, method=method, json=big, headers=headers)
            assert_problem(response, 413)


def test_unknown_field_is_422(client, endpoints, subtests):
    """An unknown field in any write body is refused with 422 naming it (typos are errors)."""
    for name, (method, url, headers, body) in endpoints.items():
        with subtests.test(endpoint=name), nothing_written():
            response = client.open(url, method=method, json={**body, "surprise": 1}, headers=headers)
            assert_problem(response, 422, "surprise")


def test_body_must_be_a_json_object(client, endpoints, subtests):
    """A missing body, or JSON that is not an object, answers 422 naming the body."""
    for name, (method, url, headers, _) in endpoints.items():
        for raw in (None, "", "null", "[]", "1", '"text"', "true"):
            with subtests.test(endpoint=name, body=raw), nothing_written():
                kwargs = {} if raw is None else {"data": raw}
                response = client.open(
                    url,
                    method=method,
                    headers={**headers, "Content-Type": "application/json"},
                    **kwargs,
                )
                assert_problem(response, 422, "body")


def test_unknown_method_is_405_with_allow(client, admin):
    """A method a resource does not support answers a 405 problem listing the allowed ones."""
    response = client.delete(f"{API}/orders", headers=admin.headers)
    assert_problem(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "POST"}


def test_body_just_under_the_limit_is_validated_not_413(client, admin):
    """A body under 64 KiB reaches validation: an over-long notes field is a 422, not a 413."""
    with nothing_written():
        response = client.post(f"{API}/orders", json=order_body(notes="n" * 60_000), headers=admin.headers)
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


def _item(**overrides) -> dict:
    return {"name": "Margherita", "quantity": 2, "unit_price_cents": 1299, **overrides}


def _customer(**overrides) -> dict:
    return {"name": "Zoë", "phone": "+1 555 0100", "address": "1 Main St", **overrides}


def _refuse_orders(client, admin, subtests, cases, status: int = 422) -> None:
    """POST each (body, field) case: ``status`` naming ``field``, nothing written."""
    for body, field in cases:
        with subtests.test(field=field, body=json.dumps(body)[:120]), nothing_written():
            response = client.post(f"{API}/orders", json=body, headers=admin.headers)
            assert_problem(response, status, field)


MISSING_FIELDS = (
    "customer",
    "items",
    "customer.name",
    "customer.phone",
    "customer.address",
    "items.0.name",
    "items.0.quantity",
    "items.0.unit_price_cents",
)


def test_missing_order_field_is_422(client, admin, subtests):
    """A missing required order field answers 422 naming its dotted path."""
    _refuse_orders(client, admin, subtests, [(_without(f), f) for f in MISSING_FIELDS])


WRONG_TYPES = [
    (order_body(items=[_item(quantity="2")]), "items.0.quantity"),
    (order_body(items=[_item(quantity=True)]), "items.0.quantity"),
    (order_body(items=[_item(quantity=False)]), "items.0.quantity"),
    (order_body(items=[_item(quantity=2.5)]), "items.0.quantity"),
    (order_body(items=[_item(quantity=None)]), "items.0.quantity"),
    (order_body(items=[_item(quantity=[2])]), "items.0.quantity"),
    (order_body(items=[_item(unit_price_cents="1299")]), "items.0.unit_price_cents"),
    (order_body(items=[_item(unit_price_cents=12.99)]), "items.0.unit_price_cents"),
    (order_body(items=[_item(unit_price_cents=True)]), "items.0.unit_price_cents"),
    (order_body(items=[_item(), _item(name=7)]), "items.1.name"),
    (order_body(items={"0": _item()}), "items"),
    (order_body(items="Margherita"), "items"),
    (order_body(customer="Zoë, 1 Main St"), "customer"),
    (order_body(customer=_customer(name=42)), "customer.name"),
    (order_body(customer=_customer(phone=15550100)), "customer.phone"),
    (order_body(notes=5), "notes"),
    (order_body(notes=None), "notes"),
    (order_body(currency=840), "currency"),
]


def test_wrong_typed_order_field_is_422(client, admin, subtests):
    """Wrong JSON types are refused, never coerced ("2", true, 2.5 are not quantities; 2.0 is
    the JSON number 2, see tests/test_fuzz_findings.py)."""
    _refuse_orders(client, admin, subtests, WRONG_TYPES)


def test_out_of_range_quantity_is_422(client, admin, subtests):
    """Quantities must be 1..1000: zero, negative and huge ones answer 422."""
    cases = [
        (order_body(items=[_item(quantity=q)]), "items.0.quantity")
        for q in (0, -1, -1000, 1001, 10**12, 10**30)
    ]
    _refuse_orders(client, admin, subtests, cases)


def test_out_of_range_price_is_422(client, admin, subtests):
    """Unit prices must be 0..10,000,000 cents: negative and huge ones answer 422."""
    cases = [
        (order_body(items=[_item(unit_price_cents=p)]), "items.0.unit_price_cents")
        for p in (-1, -1299, 10_000_001, 10**18, 10**30)
    ]
    _refuse_orders(client, admin, subtests, cases)


def test_non_finite_number_is_refused(client, admin):
    """A number that overflows to infinity is not a quantity (400 or 422, never 500)."""
    raw = json.dumps(order_body()).replace('"quantity": 2', '"quantity": 1e400')
    assert "1e400" in raw
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


def test_empty_items_is_422(client, admin, subtests):
    """An order needs at least one item."""
    _refuse_orders(client, admin, subtests, [(order_body(items=[]), "items")])


def test_too_many_items_is_422(client, admin, subtests):
    """More than 100 items answers 422 naming items; exactly 100 is accepted."""
    many = [_item(name=f"i{n}") for n in range(101)]
    _refuse_orders(client, admin, subtests, [(order_body(items=many), "items")])
    response = client.post(f"{API}/orders", json=order_body(items=many[:100]), headers=admin.headers)
    assert response.status_code == 201, response.json
    assert [i["name"] for i in response.json["items"]] == [f"i{n}" for n in range(100)]


def test_bad_currency_is_422(client, admin, subtests):
    """Currency must be three upper-case letters (ISO 4217 style); a good one is kept."""
    cases = [
        (order_body(currency=c), "currency")
        for c in ("usd", "US", "EURO", "", "U$D", "€€€", "12 ", " EUR", None)
    ]
    _refuse_orders(client, admin, subtests, cases)
    response = client.post(f"{API}/orders", json=order_body(currency="EUR"), headers=admin.headers)
    assert response.status_code == 201
    assert response.json["currency"] == "EUR"


UNKNOWN_FIELDS = [
    (order_body(extra=1), "extra"),
    (order_body(customer=_customer(email="z@example.com")), "customer.email"),
    (order_body(items=[_item(sku="M-1")]), "items.0.sku"),
    (order_body(status="delivered"), "status"),
    (order_body(total_cents=1), "total_cents"),
    (order_body(id="ord_mine"), "id"),
    (order_body(version=7), "version"),
]


def test_unknown_order_field_is_422(client, admin, subtests):
    """Unknown fields, top-level or nested (also server-owned ones like status), answer 422."""
    _refuse_orders(client, admin, subtests, UNKNOWN_FIELDS)


BAD_STRINGS = [
    (order_body(customer=_customer(name="")), "customer.name"),
    (order_body(customer=_customer(name="   ")), "customer.name"),
    (order_body(customer=_customer(name="n" * 201)), "customer.name"),
    (order_body(customer=_customer(phone="call me")), "customer.phone"),
    (order_body(customer=_customer(phone="12")), "customer.phone"),
    (order_body(customer=_customer(phone="1" * 41)), "customer.phone"),
    (order_body(customer=_customer(address="")), "customer.address"),
    (order_body(customer=_customer(address="a" * 501)), "customer.address"),
    (order_body(items=[_item(name="")]), "items.0.name"),
    (order_body(items=[_item(name="n" * 201)]), "items.0.name"),
    (order_body(notes="n" * 1001), "notes"),
]


def test_bad_strings_are_422(client, admin, subtests):
    """Blank, over-long or malformed strings answer 422 naming the field."""
    _refuse_orders(client, admin, subtests, BAD_STRINGS)


UNICODE_CUSTOMER = {
    "name": "Zoë 東京 🍕",
    "phone": "+81 (3) 1234-5678",
    "address": "東京都渋谷区 1-2-3, Ålesund ✓ 🏠",
}
UNICODE_ITEMS = [{"name": "Café crème ☕ / ピザ", "quantity": 3, "unit_price_cents": 450}]
UNICODE_NOTES = "بدون بصل — sans oignon 🧅"


def test_unicode_is_accepted_and_returned_intact(client, admin):
    """Non-ASCII names, addresses, items and notes round-trip unchanged (escaped or raw UTF-8)."""
    body = order_body(customer=UNICODE_CUSTOMER, items=UNICODE_ITEMS, notes=UNICODE_NOTES)
    ids = []
    for ascii_escaped in (True, False):
        raw = json.dumps(body, ensure_ascii=ascii_escaped).encode("utf-8")
        assert (b"\\u" in raw) is ascii_escaped
        response = client.post(
            f"{API}/orders", data=raw, headers={**admin.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 201, response.json
        assert "東京" in response.get_data(as_text=True)  # sent as UTF-8, not escaped
        for order in (response.json, get_order(client, admin, response.json["id"])):
            assert order["customer"] == UNICODE_CUSTOMER
            assert order["items"] == UNICODE_ITEMS
            assert order["notes"] == UNICODE_NOTES
            assert order["total_cents"] == 1350
        # The event the relay will publish carries the same text.
        (status_row,) = outbox(topic=f"orders/{response.json['id']}/status")
        assert status_row["payload"]["order"]["customer"] == UNICODE_CUSTOMER
        assert status_row["payload"]["order"]["items"] == UNICODE_ITEMS
        assert status_row["payload"]["order"]["notes"] == UNICODE_NOTES
        ids.append(response.json["id"])
    # A search by a non-ASCII substring finds both.
    found = client.get(f"{API}/orders", query_string={"q": "東京"}, headers=admin.headers)
    assert sorted(o["id"] for o in found.json["orders"]) == sorted(ids)


def test_long_unicode_name_counts_characters_not_bytes(client, admin):
    """200 four-byte characters fit the 200-character name limit; 201 do not."""
    response = client.post(
        f"{API}/orders", json=order_body(customer=_customer(name="🍕" * 200)), headers=admin.headers
    )
    assert response.status_code == 201, response.json
    assert response.json["customer"]["name"] == "🍕" * 200
    with nothing_written():
        response = client.post(
            f"{API}/orders",
            json=order_body(customer=_customer(name="🍕" * 201)),
            headers=admin.headers,
        )
        assert_problem(response, 422, "customer.name")


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
    response = client.patch(f"{API}/agents/{agent.agent_id}", json={"active": False}, headers=admin.headers)
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


def _refuse(client, subtests, method, url, headers, cases) -> None:
    for body, field in cases:
        with subtests.test(field=field, body=json.dumps(body)[:120]), nothing_written():
            response = client.open(url, method=method, json=body, headers=headers)
            assert_problem(response, 422, field)


def test_bad_status_change_body_is_422(client, admin, place_order, subtests):
    """PATCH /orders/<id>/status validates its body and names the bad field."""
    order = place_order()
    cases = [
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
    ]
    _refuse(client, subtests, "PATCH", f"{API}/orders/{order['id']}/status", admin.headers, cases)


def test_bad_assign_body_is_422(client, admin, place_order, subtests):
    """PUT /orders/<id>/agent validates its body and names the bad field."""
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    cases = [
        ({}, "agent_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": 123}, "agent_id"),
        ({"agent_id": None}, "agent_id"),
        ({"agent_id": "a" * 33}, "agent_id"),
        ({"agent_id": "agt_x", "reason": "r" * 501}, "reason"),
    ]
    _refuse(client, subtests, "PUT", f"{API}/orders/{order['id']}/agent", admin.headers, cases)


def test_bad_agent_patch_body_is_422(client, admin, make_agent, subtests):
    """PATCH /agents/<id> validates its body and names the bad field."""
    agent = make_agent()
    cases = [
        ({"active": "no"}, "active"),
        ({"active": 0}, "active"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"phone": "p" * 41}, "phone"),
        ({"username": "renamed"}, "username"),
    ]
    _refuse(client, subtests, "PATCH", f"{API}/agents/{agent.agent_id}", admin.headers, cases)


def test_bad_agent_create_body_is_422(client, admin, subtests):
    """POST /agents validates its body and names the bad field."""
    cases = [
        ({"name": "Ann", "username": "a b", "password": "password-1"}, "username"),
        ({"name": "Ann", "username": "ab", "password": "password-1"}, "username"),
        ({"name": "Ann", "username": "ann", "password": "short"}, "password"),
        ({"name": "", "username": "ann", "password": "password-1"}, "name"),
        ({"username": "ann", "password": "password-1"}, "name"),
    ]
    _refuse(client, subtests, "POST", f"{API}/agents", admin.headers, cases)


def test_bad_user_body_is_422(client, admin, subtests):
    """Sign-up, user creation and login validate their bodies and name the bad field."""
    signup = [
        ({"username": "ab", "password": "password-1"}, "username"),
        ({"username": "bad name!", "password": "password-1"}, "username"),
        ({"username": "newbie", "password": "short"}, "password"),
        ({"username": "newbie"}, "password"),
        ({"username": "newbie", "password": "password-1", "role": "admin"}, "role"),
    ]
    users = [
        ({"username": "boss", "password": "password-1"}, "role"),
        ({"username": "boss", "password": "password-1", "role": "agent"}, "role"),
        ({"username": "boss", "password": "password-1", "role": "root"}, "role"),
    ]
    login = [
        ({"username": "admin"}, "password"),
        ({"password": "x"}, "username"),
        ({"username": "", "password": "x"}, "username"),
    ]
    _refuse(client, subtests, "POST", f"{API}/auth/signup", {}, signup)
    _refuse(client, subtests, "POST", f"{API}/users", admin.headers, users)
    _refuse(client, subtests, "POST", f"{API}/auth/token", {}, login)


# --- headers -----------------------------------------------------------------


def test_bad_if_match_is_400(client, admin, place_order, make_agent, subtests):
    """An If-Match that is not a version number answers 400 naming If-Match on every write."""
    agent = make_agent()
    order = place_order()
    set_status(client, admin, order["id"], "confirmed")
    url = f"{API}/orders/{order['id']}"
    for value in ("abc", "-1", "3, 4", "1.0", "1234567890", "", "W/abc", '"2" "3"'):
        headers = {**admin.headers, "If-Match": value}
        writes = {
            "status": lambda h=headers: client.patch(
                f"{url}/status", json={"status": "preparing"}, headers=h
            ),
            "assign": lambda h=headers: client.put(
                f"{url}/agent", json={"agent_id": agent.agent_id}, headers=h
            ),
            "unassign": lambda h=headers: client.delete(f"{url}/agent", headers=h),
        }
        for name, write in writes.items():
            with subtests.test(value=value, write=name), nothing_written():
                assert_problem(write(), 400, "If-Match")


def test_bad_idempotency_key_is_400(client, admin, subtests):
    """An Idempotency-Key that is empty, too long or not printable ASCII answers 400."""
    for value in ("", "k" * 201, "clé-ünïcode", "tab\there", "bell\x07"):
        with subtests.test(key=value[:20]), nothing_written():
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


# --- GET /orders and GET /events queries ---------------------------------------


LIST_QUERIES = [
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
    ({"cursor": "W10"}, "cursor"),  # base64 of []
    ({"cursor": "eyJhIjoxfQ"}, "cursor"),  # base64 of {"a":1}
    ({"cursor": "WyJub3QgYSBkYXRlIiwgIm9yZF94Il0"}, "cursor"),  # ["not a date", "ord_x"]
    ({"cursor": "WzEsIDJd"}, "cursor"),  # [1, 2]
    ({"cursor": "bnVsbA"}, "cursor"),  # null
    ({"cursor": "c" * 201}, "cursor"),
    ({"q": "q" * 201}, "q"),
    ({"agent_id": "a" * 33}, "agent_id"),
    ({"sort": "asc"}, "sort"),
]


def test_bad_list_query_is_422(client, admin, place_order, subtests):
    """GET /orders refuses bad limit, status, cursor and unknown parameters, naming them."""
    place_order()
    for query, field in LIST_QUERIES:
        with subtests.test(query=query):
            response = client.get(f"{API}/orders", query_string=query, headers=admin.headers)
            assert_problem(response, 422, field)


def test_bad_events_query_is_422(client, admin, subtests):
    """GET /events refuses a bad after, limit or unknown parameter, naming it."""
    for query, field in [
        ({"after": "-1"}, "after"),
        ({"after": "abc"}, "after"),
        ({"after": str(2**63)}, "after"),  # past any database id: 422, not a 500
        ({"after": str(10**30)}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"since": "1"}, "since"),
    ]:
        with subtests.test(query=query):
            response = client.get(f"{API}/events", query_string=query, headers=admin.headers)
            assert_problem(response, 422, field)


def test_control_characters_are_refused(client, admin):
    """Names refuse control characters; address and notes accept newlines and tabs but no others."""
    for body, field in (
        (
            order_body(customer={"name": "Ada\x00", "phone": "+1 555 0100", "address": "1 Main"}),
            "customer.name",
        ),
        (
            order_body(customer={"name": "Ada", "phone": "+1 555 0100", "address": "1 Main\x1b"}),
            "customer.address",
        ),
        (order_body(items=[{"name": "Te\na", "quantity": 1, "unit_price_cents": 1}]), "items.0.name"),
        (order_body(notes="bell\x07"), "notes"),
    ):
        with nothing_written():
            assert_problem(client.post(f"{API}/orders", json=body, headers=admin.headers), 422, field)
    ok = order_body(
        customer={"name": "Ada", "phone": "+1 555 0100", "address": "Flat 2\n1 Main St"},
        notes="gate\tcode 12",
    )
    response = client.post(f"{API}/orders", json=ok, headers=admin.headers)
    assert response.status_code == 201
    assert response.json["customer"]["address"] == "Flat 2\n1 Main St"


def test_a_body_is_parsed_once_per_request(app, client, admin, monkeypatch):
    """The guard parses the body (400 for malformed JSON) and the view's validation reuses
    that value: Flask's JSON parser is not called again for POST /orders or a status change."""
    parsed = []
    loads = app.json.loads
    monkeypatch.setattr(app.json, "loads", lambda data, **kw: parsed.append(data) or loads(data, **kw))
    order = client.post("/api/v1/orders", json=order_body(), headers=admin.headers)
    assert order.status_code == 201, order.data
    order_id = json.loads(order.data)["id"]  # (the test client's .json would count)
    changed = client.patch(
        f"/api/v1/orders/{order_id}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert changed.status_code == 200 and json.loads(changed.data)["status"] == "confirmed"
    assert parsed == []
    # Positive control: a request that asks for its JSON afresh goes through the counted parser.
    with app.test_request_context("/", method="POST", data='{"a": 1}', content_type="application/json"):
        from flask import request

        assert request.get_json() == {"a": 1}
    assert len(parsed) == 1
