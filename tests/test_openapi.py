"""The served OpenAPI document is valid and agrees with what the server enforces."""

from __future__ import annotations

import re

from openapi_spec_validator import validate


def _spec(client) -> dict:
    response = client.get("/api/v1/docs/openapi.json")
    assert response.status_code == 200
    return response.json


def test_document_is_valid_openapi(client):
    """The document validates as OpenAPI 3.1 and lists every REST endpoint of the contract."""
    spec = _spec(client)
    validate(spec)
    expected = {
        ("post", "/api/v1/orders"), ("get", "/api/v1/orders"), ("get", "/api/v1/orders/{order_id}"),
        ("get", "/api/v1/orders/{order_id}/history"), ("patch", "/api/v1/orders/{order_id}/status"),
        ("put", "/api/v1/orders/{order_id}/agent"), ("delete", "/api/v1/orders/{order_id}/agent"),
        ("post", "/api/v1/agents"), ("get", "/api/v1/agents"), ("get", "/api/v1/agents/{agent_id}/orders"),
        ("patch", "/api/v1/agents/{agent_id}"), ("get", "/api/v1/events"), ("post", "/api/v1/auth/token"),
        ("get", "/api/v1/healthz"), ("get", "/api/v1/readyz"), ("get", "/api/v1/metrics"),
    }  # fmt: skip
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert expected <= documented


def test_errors_are_documented_as_problem_json(client):
    """Every documented 4xx is application/problem+json with the Problem schema."""
    spec = _spec(client)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if code.startswith("4"):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)


def test_security_in_the_document_is_what_the_server_enforces(client):
    """An operation documented with bearer security answers 401 without a token; the others do not."""
    spec = _spec(client)
    checked = 0
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/docs"):
            continue
        url = re.sub(r"\{[^}]+\}", "ord_000000000000", path)
        for method, op in ops.items():
            secured = bool(op.get("security"))
            response = client.open(url, method=method.upper(), json={})
            assert (response.status_code == 401) == secured, (method, path, response.status_code)
            checked += 1
    assert checked >= 20
