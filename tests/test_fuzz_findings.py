"""Regression tests for what the schemathesis run (tests/test_fuzz_api.py) found.

Each was a 500, or a request the OpenAPI document allowed but the server refused (or
the other way round); the fix is in the code or in the document, never in the check.
"""

from __future__ import annotations

import pytest

from tests.conftest import order_body
from tests.helpers import API, assert_problem, nothing_written

ITEM = {"name": "Tea", "quantity": 2, "unit_price_cents": 300}


def _spec(client) -> dict:
    return client.get(f"{API}/docs/openapi.json").json


def _parameter(spec: dict, path: str, method: str, name: str) -> dict:
    params = spec["paths"][path][method]["parameters"]
    return next(p for p in params if p["name"] == name)


def test_a_whole_number_written_as_2_0_is_the_integer_2(client, admin):
    """JSON has one number type: 2.0 is a valid "integer" quantity (2.5 and "2" are not)."""
    body = order_body(items=[{**ITEM, "quantity": 2.0, "unit_price_cents": 300.0}])
    response = client.post(f"{API}/orders", json=body, headers=admin.headers)
    assert response.status_code == 201, response.json
    assert response.json["items"][0]["quantity"] == 2
    assert response.json["total_cents"] == 600


def test_optional_headers_and_query_parameters_are_never_documented_as_null(client):
    """A header or a query value cannot be JSON null: the document offered it (sent as "null")."""
    spec = _spec(client)
    for path, method, name in (
        ("/api/v1/orders/{order_id}/status", "patch", "If-Match"),
        ("/api/v1/orders", "post", "Idempotency-Key"),
        ("/api/v1/orders", "get", "status"),
        ("/api/v1/orders", "get", "cursor"),
    ):
        schema = _parameter(spec, path, method, name)["schema"]
        assert schema.get("type") == "string" and "anyOf" not in schema, (path, name, schema)


@pytest.mark.parametrize("value", ["placed", " placed , ready ,", ",ready,", ""])
def test_status_filter_values_the_document_allows_are_accepted(client, admin, value):
    """The documented status= pattern and the server agree on what is valid."""
    import re

    pattern = _parameter(_spec(client), "/api/v1/orders", "get", "status")["schema"]["pattern"]
    assert re.search(pattern, value)
    response = client.get(f"{API}/orders", query_string={"status": value}, headers=admin.headers)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("value", ["\tplaced", "placed ready", "PLACED", ","])
def test_status_filter_values_outside_the_document_are_refused(client, admin, value):
    """A tab is not a space, and a list needs commas: 422 naming status (was 200 for a tab)."""
    import re

    pattern = _parameter(_spec(client), "/api/v1/orders", "get", "status")["schema"]["pattern"]
    assert not re.search(pattern, value)
    response = client.get(f"{API}/orders", query_string={"status": value}, headers=admin.headers)
    assert_problem(response, 422, "status")


def test_if_match_takes_ascii_digits_only(client, admin, place_order):
    """An Arabic-Indic digit is not the version 3 (it was read as one): 400 naming If-Match."""
    order = place_order()
    response = client.patch(
        f"{API}/orders/{order['id']}/status",
        json={"status": "confirmed"},
        headers={**admin.headers, "If-Match": "\u0661"},  # ARABIC-INDIC DIGIT ONE
    )
    assert_problem(response, 400, "If-Match")


def test_webhook_url_rule_is_in_the_document(client):
    """The document says what POST /webhooks accepts: an absolute http(s) URL."""
    import re

    body = _spec(client)["components"]["schemas"]["WebhookCreate"]["properties"]["url"]
    assert re.search(body["pattern"], "https://example.test/hook")
    assert not re.search(body["pattern"], "status")
    assert not re.search(body["pattern"], "ftp://example.test/")


NUL_REQUESTS = [
    ("POST", "/webhooks", {"url": "http://x.test", "events": ["*"], "description": "\x00"}, "description"),
    ("GET", "/orders?q=a%00b", None, "q"),
    ("GET", "/orders?agent_id=a%00b", None, "agent_id"),
    ("GET", "/orders/ord%00x", None, "order_id"),
    ("GET", "/agents/agt%00x/orders", None, "agent_id"),
    ("POST", "/auth/token", {"username": "ad\x00min", "password": "x"}, "username"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), NUL_REQUESTS)
def test_a_nul_character_is_a_422_not_a_500(client, admin, method, path, body, field):
    """PostgreSQL refuses NUL in text: it answered 500. Now every backend answers 422 naming
    the field, and writes nothing."""
    with nothing_written():
        response = client.open(f"{API}{path}", method=method, json=body, headers=admin.headers)
    assert_problem(response, 422, field)
