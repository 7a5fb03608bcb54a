"""What every resource module shares: its blueprint factory, body and header checks."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from werkzeug.exceptions import RequestEntityTooLarge

from order_service.api import security
from order_service.api.problems import Problem

PREFIX = "/api/v1"
BEARER: list[dict[str, list[Any]]] = [{"bearer": []}]
PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_RESPONSES: ResponseDict = {code: PROBLEM for code in (400, 401, 403, 404, 409, 412, 413, 415, 422)}

# Endpoints anyone may call; every other endpoint needs a bearer token, checked
# before the body is validated.
PUBLIC_ENDPOINTS: set[str] = set()
# Endpoints whose body is not JSON (a photo): they check their own body.
RAW_BODY_ENDPOINTS: set[str] = set()
API_BLUEPRINTS: set[str] = set()


def blueprint(name: str, description: str) -> APIBlueprint:
    """A resource's blueprint. Routes that need a token say ``security=BEARER`` (documentation)
    and carry ``@require`` (enforcement); the public ones are listed with :func:`public`.
    tests/test_openapi.py checks that the document and the server agree."""
    API_BLUEPRINTS.add(name)
    return APIBlueprint(
        name,
        __name__,
        url_prefix=PREFIX,
        abp_tags=[Tag(name=name, description=description)],
        abp_responses=PROBLEM_RESPONSES,
    )


def public(endpoint: str) -> None:
    PUBLIC_ENDPOINTS.add(endpoint)


def _check_body() -> None:
    """415 for a body that is not JSON, 400 for JSON that does not parse."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding") == "chunked"
    if not has_body:
        return
    if request.mimetype != "application/json":
        raise Problem(
            415,
            "Unsupported Media Type",
            f"send the body as application/json, not {request.mimetype or 'no content type'}",
            errors=[{"field": "Content-Type", "message": "must be application/json"}],
        )
    data = request.get_data(cache=True)  # 413 when a Content-Length is over the limit
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A body without a length (chunked) is read up to the limit and silently cut there:
        # one that reached it may go on, so refuse it rather than use its first part.
        raise RequestEntityTooLarge()
    try:
        parsed = json.loads(data)
    except RecursionError:
        # Nesting deeper than the parser's recursion limit: refuse it, do not 500.
        raise Problem(
            400,
            "Malformed JSON",
            "the body is nested too deeply",
            errors=[{"field": "body", "message": "nested too deeply"}],
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "Malformed JSON",
            f"the body is not valid JSON: {exc}",
            errors=[{"field": "body", "message": str(exc)}],
        ) from None
    # Parsed once: the view's validation (flask-openapi3 calls request.get_json) takes this
    # value from werkzeug's cache of it rather than parsing the body a second time.
    request._cached_json = (parsed, parsed)


def init_app(app: Flask) -> None:
    @app.before_request
    def _guard() -> None:
        if request.blueprint not in API_BLUEPRINTS:
            return  # the OpenAPI document and Swagger UI are public
        if request.endpoint not in PUBLIC_ENDPOINTS:
            security.current_user()
        if request.endpoint not in RAW_BODY_ENDPOINTS:
            _check_body()


_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,9})"?\s*$', re.ASCII)


def if_match(raw: str | None) -> int | None:
    """The version a client expects, from ``If-Match: 3`` or ``If-Match: "3"``."""
    if raw is None or raw.strip() == "*":
        return None  # "*": any current version (RFC 9110)
    match = _ETAG.match(raw)
    if not match:
        raise Problem(
            400,
            "Bad If-Match",
            'If-Match must be the order\'s version, e.g. If-Match: "3"',
            errors=[{"field": "If-Match", "message": "expected a version number"}],
        )
    return int(match.group(1))


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not (1 <= len(raw) <= 200) or not raw.isprintable() or not raw.isascii():
        raise Problem(
            400,
            "Bad Idempotency-Key",
            "Idempotency-Key must be 1 to 200 printable ASCII characters (a UUID is ideal)",
            errors=[{"field": "Idempotency-Key", "message": "1-200 printable ASCII characters"}],
        )
    return raw
