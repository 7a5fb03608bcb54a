"""Role escalation over REST: every endpoint a role may not call answers it 403, writes nothing.

:data:`ROLES` says who may call each endpoint of the API; a test checks that it names
every endpoint the app serves, so a new endpoint cannot go unclassified. Customers and
agents then call everything they may not, with valid bodies, and must get a 403
problem with nothing written (broker logins and webhooks included). Within what a role
may call, an agent reaches only its own agent record and orders
(tests/test_api_auth.py holds the order moves), and signing up never makes an admin.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from order_service.api.common import API_BLUEPRINTS, PUBLIC_ENDPOINTS
from order_service.store.db import db
from order_service.store.models import MqttCredential
from order_service.webhooks.model import WebhookEndpoint
from tests.conftest import order_body
from tests.helpers import API, assert_problem, db_state, walk_to
from tests.push_endpoint import b64url

ADMIN, AGENT, CUSTOMER = "admin", "agent", "customer"
ANYONE = (ADMIN, AGENT, CUSTOMER)

# endpoint -> the roles that may call it (what they may then do is per object)
ROLES: dict[str, tuple[str, ...]] = {
    "agents.create_agent": (ADMIN,),
    "agents.list_agents": (ADMIN,),
    "agents.update_agent": (ADMIN,),
    "agents.get_agent": (ADMIN, AGENT),
    "agents.agent_orders": (ADMIN, AGENT),
    "agents.rotate_mqtt_credentials": (ADMIN, AGENT),
    "auth.create_user": (ADMIN,),
    "auth.dashboard_mqtt_credentials": (ADMIN, CUSTOMER),
    "auth.me": ANYONE,
    "auth.logout": ANYONE,
    "system.events": (ADMIN,),
    "system.get_lifecycle": ANYONE,
    "orders.create_order": (ADMIN, CUSTOMER),
    "orders.list_orders": ANYONE,
    "orders.get_order": ANYONE,
    "orders.get_history": ANYONE,
    "orders.get_trail": (ADMIN, CUSTOMER),
    "orders.change_status": ANYONE,
    "orders.assign_agent": (ADMIN,),
    "orders.unassign_agent": (ADMIN,),
    "dispatch.make_offer": (ADMIN,),
    "dispatch.accept_offer": (AGENT,),
    "dispatch.decline_offer": (AGENT,),
    "dispatch.get_settings": (ADMIN,),
    "dispatch.patch_settings": (ADMIN,),
    "proof.get_proof_settings": ANYONE,
    "proof.upload_photo": (AGENT,),
    "proof.get_photo": (ADMIN, CUSTOMER),
    "push.add_subscription": (AGENT,),
    "push.list_subscriptions": (ADMIN, AGENT),
    "push.remove_subscription": (AGENT,),
    "webhooks.create_webhook": (ADMIN,),
    "webhooks.list_webhooks": (ADMIN,),
    "webhooks.get_webhook": (ADMIN,),
    "webhooks.delete_webhook": (ADMIN,),
    "webhooks.list_deliveries": (ADMIN,),
    "catalog.create_category": (ADMIN,),
    "catalog.update_category": (ADMIN,),
    "catalog.delete_category": (ADMIN,),
    "catalog.create_item": (ADMIN,),
    "catalog.update_item": (ADMIN,),
    "catalog.delete_item": (ADMIN,),
}


def test_every_endpoint_has_its_roles_listed(app):
    """A new endpoint must be added to ROLES (and so to the 403 test below)."""
    served = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in API_BLUEPRINTS and rule.endpoint not in PUBLIC_ENDPOINTS
    }
    assert set(ROLES) == served, {"unlisted": served - set(ROLES), "gone": set(ROLES) - served}


def _state() -> dict:
    """Every row an escalation could write: orders, users, agents, broker logins, webhooks."""
    state = db_state()
    with db.connection_context():
        state["mqtt"] = sorted(
            MqttCredential.select(MqttCredential.username, MqttCredential.secret_hash).tuples()
        )
        state["webhooks"] = sorted(WebhookEndpoint.select(WebhookEndpoint.id).tuples())
    return state


@pytest.fixture
def requests(client, admin, make_agent, place_order, menu) -> dict[str, tuple[str, str, dict | None]]:
    """A valid request for each endpoint (endpoint -> method, URL, body), on real objects."""
    order = place_order()
    walk_to(client, admin, order["id"], "confirmed")
    agent = make_agent()
    hook = client.post(
        f"{API}/webhooks",
        json={"url": "https://hooks.example.com/orderbus", "events": ["*"]},
        headers=admin.headers,
    )
    assert hook.status_code == 201, hook.json
    o, a, w = (
        f"{API}/orders/{order['id']}",
        f"{API}/agents/{agent.agent_id}",
        f"{API}/webhooks/{hook.json['id']}",
    )
    return {
        "agents.create_agent": (
            "POST",
            f"{API}/agents",
            {"name": "Eve", "username": "eve", "password": "password-1"},
        ),
        "agents.list_agents": ("GET", f"{API}/agents", None),
        "agents.update_agent": ("PATCH", a, {"name": "Renamed"}),
        "agents.get_agent": ("GET", a, None),
        "agents.agent_orders": ("GET", f"{a}/orders", None),
        "agents.rotate_mqtt_credentials": ("POST", f"{a}/mqtt-credentials", None),
        "auth.create_user": (
            "POST",
            f"{API}/users",
            {"username": "boss", "password": "password-1", "role": "admin"},
        ),
        "auth.dashboard_mqtt_credentials": ("POST", f"{API}/auth/mqtt-credentials", None),
        "system.events": ("GET", f"{API}/events", None),
        "orders.create_order": ("POST", f"{API}/orders", order_body()),
        "orders.assign_agent": ("PUT", f"{o}/agent", {"agent_id": agent.agent_id, "offer": False}),
        "orders.unassign_agent": ("DELETE", f"{o}/agent", None),
        "orders.get_trail": ("GET", f"{o}/trail", None),
        "dispatch.make_offer": ("POST", f"{o}/offer", {"agent_ids": [agent.agent_id]}),
        "dispatch.accept_offer": ("POST", f"{o}/offer/accept", None),
        "dispatch.decline_offer": ("POST", f"{o}/offer/decline", {}),
        "dispatch.get_settings": ("GET", f"{API}/settings/dispatch", None),
        "dispatch.patch_settings": ("PATCH", f"{API}/settings/dispatch", {"auto_assign": True}),
        "proof.upload_photo": ("POST", f"{o}/photo", None),
        "proof.get_photo": ("GET", f"{o}/photo", None),
        "push.add_subscription": ("POST", f"{a}/push-subscriptions", _push_subscription()),
        "push.list_subscriptions": ("GET", f"{a}/push-subscriptions", None),
        "push.remove_subscription": ("DELETE", f"{a}/push-subscriptions?device_id=phone-1", None),
        "webhooks.create_webhook": (
            "POST",
            f"{API}/webhooks",
            {"url": "https://evil.example.com/", "events": ["*"]},
        ),
        "webhooks.list_webhooks": ("GET", f"{API}/webhooks", None),
        "webhooks.get_webhook": ("GET", w, None),
        "webhooks.delete_webhook": ("DELETE", w, None),
        "webhooks.list_deliveries": ("GET", f"{w}/deliveries", None),
        "catalog.create_category": ("POST", f"{API}/catalog/categories", {"name": "Free food"}),
        "catalog.update_category": ("PATCH", f"{API}/catalog/categories/{menu.category_id}", {"name": "x"}),
        "catalog.delete_category": ("DELETE", f"{API}/catalog/categories/{menu.category_id}", None),
        "catalog.create_item": (
            "POST",
            f"{API}/catalog/items",
            {"category_id": menu.category_id, "name": "Free", "price_cents": 0},
        ),
        "catalog.update_item": ("PATCH", f"{API}/catalog/items/{menu.margherita}", {"price_cents": 0}),
        "catalog.delete_item": ("DELETE", f"{API}/catalog/items/{menu.margherita}", None),
    }


def _push_subscription() -> dict:
    """A well-formed browser subscription (a real P-256 key), so only the role can refuse it."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {
        "device_id": "phone-1",
        "subscription": {
            "endpoint": "https://push.example.com/send/abc",
            "keys": {"p256dh": b64url(point), "auth": b64url(b"0123456789abcdef")},
        },
    }


def test_each_role_gets_403_from_what_it_may_not_call(client, make_customer, make_agent, requests, subtests):
    """A customer and an agent call every endpoint their role may not: 403, nothing written."""
    callers = {CUSTOMER: make_customer(), AGENT: make_agent()}
    forbidden = [(role, name) for name, roles in ROLES.items() for role in callers if role not in roles]
    assert {name for _, name in forbidden} <= set(requests), "a forbidden endpoint has no request"
    before = _state()
    for role, name in forbidden:
        method, url, body = requests[name]
        with subtests.test(role=role, endpoint=name):
            kwargs = {} if body is None else {"json": body}
            response = client.open(url, method=method, headers=callers[role].headers, **kwargs)
            assert_problem(response, 403)
    assert _state() == before


def test_an_agent_reaches_only_its_own_agent_record(client, make_agent, subtests):
    """An agent may read and rotate its own record and worklist, another agent's not."""
    me, other = make_agent(), make_agent()
    before = _state()
    for method, suffix in (("GET", ""), ("GET", "/orders"), ("POST", "/mqtt-credentials")):
        with subtests.test(request=f"{method} /agents/<other>{suffix}"):
            response = client.open(
                f"{API}/agents/{other.agent_id}{suffix}", method=method, headers=me.headers
            )
            assert_problem(response, 403)
    assert _state() == before
    assert client.get(f"{API}/agents/{me.agent_id}/orders", headers=me.headers).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [{"role": "admin"}, {"role": "agent"}, {"is_admin": True}, {"active": True, "role": "admin"}],
    ids=["role admin", "role agent", "is_admin", "active and role"],
)
def test_signup_never_grants_a_role(client, extra):
    """POST /auth/signup makes customers only: a role (or any other field) is refused, 422
    naming it, and no account is created; the same body without it makes a customer."""
    body = {"username": "mallory", "password": "password-1"}
    before = _state()
    problem = assert_problem(client.post(f"{API}/auth/signup", json={**body, **extra}), 422)
    assert {e["field"] for e in problem["errors"]} & set(extra), problem
    assert _state() == before
    created = client.post(f"{API}/auth/signup", json=body)
    assert created.status_code == 201 and created.json["role"] == CUSTOMER
