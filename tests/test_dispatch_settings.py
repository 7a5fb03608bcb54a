"""Dispatch settings: ORDERBUS_DISPATCH_* defaults, admin overrides at run time over REST."""

from __future__ import annotations

import pytest

from order_service.config import load_settings
from tests.dispatch_helpers import patch_settings
from tests.helpers import API, assert_problem

URL = f"{API}/settings/dispatch"


@pytest.fixture
def settings_overrides(settings_overrides):
    """This deployment's environment: a 45 s offer and auto-assignment on."""
    return {**settings_overrides, "dispatch_offer_seconds": 45, "dispatch_auto_assign": True}


def test_defaults_come_from_the_environment(client, admin):
    """With no override, the effective values are the ORDERBUS_DISPATCH_* values."""
    body = client.get(URL, headers=admin.headers).json
    assert body["overrides"] == {} and body["version"] == 0 and body["updated_at"] is None
    assert body["values"] == body["defaults"]
    assert body["values"]["offer_seconds"] == 45 and body["values"]["auto_assign"] is True
    assert body["values"]["agent_cap"] == 3 and body["values"]["prep_minutes"] == 20


def test_admin_overrides_and_resets(client, admin):
    """PATCH overrides what it names; null returns a setting to its default; each change bumps version."""
    body = patch_settings(client, admin, agent_cap=5, auto_assign=False, travel_speed_kmh=15)
    assert body["values"]["agent_cap"] == 5 and body["values"]["auto_assign"] is False
    assert body["overrides"] == {"agent_cap": 5, "auto_assign": False, "travel_speed_kmh": 15.0}
    assert body["defaults"]["auto_assign"] is True and body["version"] == 1
    assert body["updated_by"] == admin.user_id
    body = patch_settings(client, admin, auto_assign=None)
    assert body["values"]["auto_assign"] is True and "auto_assign" not in body["overrides"]
    assert body["version"] == 2
    assert client.get(URL, headers=admin.headers).json == body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent_cap": 0}, "agent_cap"),
        ({"offer_seconds": "60"}, "offer_seconds"),
        ({"auto_assign_on": "placed"}, "auto_assign_on"),
        ({"surge": True}, "surge"),
        ({"origin_lat": 48.85}, None),  # one coordinate without the other
    ],
)
def test_bad_settings_are_refused(client, admin, change, field):
    """Out of range, wrong type, unknown name, or an origin without both coordinates: 422."""
    assert_problem(client.patch(URL, json=change, headers=admin.headers), 422, field)
    assert client.get(URL, headers=admin.headers).json["version"] == 0


def test_only_admins(client, make_agent, make_customer):
    """Agents and customers get 403 for reading and for changing."""
    for actor in (make_agent(), make_customer()):
        assert_problem(client.get(URL, headers=actor.headers), 403)
        assert_problem(client.patch(URL, json={"agent_cap": 9}, headers=actor.headers), 403)


def test_environment_is_checked_at_start():
    """An origin with one coordinate, or a presence timeout not longer than the heartbeat,
    is a configuration error (the process stops with a message naming the variable)."""
    with pytest.raises(ValueError, match="ORIGIN"):
        load_settings({"dispatch_origin_lat": 1.0})
    with pytest.raises(ValueError, match="PRESENCE_TIMEOUT"):
        load_settings({"presence_heartbeat_seconds": 30, "presence_timeout_seconds": 30})


def test_dispatch_endpoints_are_in_the_openapi_document(client):
    """Offers and settings are documented, with bearer security, and problem+json errors."""
    paths = client.get(f"{API}/docs/openapi.json").json["paths"]
    expected = {
        ("post", "/api/v1/orders/{order_id}/offer"),
        ("post", "/api/v1/orders/{order_id}/offer/accept"),
        ("post", "/api/v1/orders/{order_id}/offer/decline"),
        ("get", "/api/v1/settings/dispatch"),
        ("patch", "/api/v1/settings/dispatch"),
    }
    for method, path in expected:
        operation = paths[path][method]
        assert operation["security"] == [{"bearer": []}], (method, path)
        assert "application/problem+json" in operation["responses"]["409"]["content"]
