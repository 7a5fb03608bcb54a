"""Behind a reverse proxy: X-Forwarded-For/-Proto count only from ORDERBUS_TRUSTED_PROXIES.

A probe route added by the test shows what the app takes as the client's address and
scheme (what the login throttle and the access log see)."""

from __future__ import annotations

import pytest
from flask import jsonify, request

from order_service.api.app import create_app

FORWARDED = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}


def _probe(settings_overrides: dict, trusted: str, peer: str) -> dict:
    app = create_app({**settings_overrides, "trusted_proxies": trusted})
    app.add_url_rule("/probe", "probe", lambda: jsonify(remote=request.remote_addr, scheme=request.scheme))
    response = app.test_client().get("/probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": peer})
    return response.json


def test_forwarded_headers_are_ignored_by_default(app, settings_overrides: dict):
    assert _probe(settings_overrides, "", "127.0.0.1") == {"remote": "127.0.0.1", "scheme": "http"}


def test_a_trusted_proxy_gives_the_address_it_saw(app, settings_overrides: dict):
    """The last X-Forwarded-For value is the proxy's own observation; earlier ones the client sent."""
    seen = _probe(settings_overrides, "127.0.0.1, ::1", "127.0.0.1")
    assert seen == {"remote": "203.0.113.7", "scheme": "https"}
    assert _probe(settings_overrides, "10.0.0.0/8", "10.1.2.3")["remote"] == "203.0.113.7"


def test_anyone_else_cannot_pass_itself_off_as_another_address(app, settings_overrides: dict):
    seen = _probe(settings_overrides, "10.0.0.0/8", "192.0.2.50")
    assert seen == {"remote": "192.0.2.50", "scheme": "http"}


def test_a_bad_proxy_list_is_refused_by_name(settings_overrides: dict):
    with pytest.raises(ValueError, match="ORDERBUS_TRUSTED_PROXIES"):
        create_app({**settings_overrides, "trusted_proxies": "127.0.0.1, not-an-address"})
