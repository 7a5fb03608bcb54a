"""Authentication and permissions over REST: tokens, roles, ownership, agents, accounts."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from order_service.store.db import db
from order_service.store.models import Token, User, utcnow
from tests.conftest import order_body
from tests.helpers import (
    API,
    assert_problem,
    assign,
    counts,
    get_order,
    nothing_written,
    set_status,
    walk_to,
)


def _assert_401(response) -> dict:
    problem = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
    return problem


def _token(actor) -> str:
    return actor.headers["Authorization"].removeprefix("Bearer ")


def _login(client, username: str, password: str):
    return client.post(f"{API}/auth/token", json={"username": username, "password": password})


# --- tokens ------------------------------------------------------------------------


def test_no_token_is_401(client, admin, place_order, subtests):
    """Without a token every protected endpoint is 401 with WWW-Authenticate, body unread."""
    order = place_order()
    requests = [
        ("GET", "/orders", None),
        ("POST", "/orders", order_body()),
        ("POST", "/orders", {"not": "an order"}),
        ("GET", f"/orders/{order['id']}", None),
        ("GET", f"/orders/{order['id']}/history", None),
        ("PATCH", f"/orders/{order['id']}/status", {"status": "confirmed"}),
        ("PUT", f"/orders/{order['id']}/agent", {"agent_id": "agt_x"}),
        ("DELETE", f"/orders/{order['id']}/agent", None),
        ("GET", "/agents", None),
        ("POST", "/agents", {"name": "A", "username": "ann", "password": "password-1"}),
        ("PATCH", "/agents/agt_x", {"active": False}),
        ("GET", "/agents/agt_x/orders", None),
        ("GET", "/events", None),
        ("POST", "/users", {"username": "boss", "password": "password-1", "role": "admin"}),
        ("GET", "/auth/me", None),
        ("DELETE", "/auth/token", None),
        ("GET", "/lifecycle", None),
    ]
    for method, path, body in requests:
        with subtests.test(request=f"{method} {path}"), nothing_written():
            kwargs = {} if body is None else {"json": body}
            _assert_401(client.open(f"{API}{path}", method=method, **kwargs))


def test_bad_token_is_401(client, admin, subtests):
    """A malformed, unknown or non-bearer Authorization header answers 401."""
    for header in (
        "Bearer not-a-real-token",
        "Bearer ",
        "Bearer",
        f"Basic {_token(admin)}",
        _token(admin),
        f"Token {_token(admin)}",
    ):
        with subtests.test(header=header[:20]):
            _assert_401(client.get(f"{API}/orders", headers={"Authorization": header}))


def test_bearer_scheme_is_case_insensitive(client, admin):
    """'bearer <token>' works like 'Bearer <token>' (auth schemes are case-insensitive)."""
    response = client.get(f"{API}/auth/me", headers={"Authorization": f"bearer {_token(admin)}"})
    assert response.status_code == 200
    assert response.json["role"] == "admin"


def test_expired_token_is_401(client, make_customer):
    """A token past its expiry answers 401."""
    customer = make_customer()
    assert client.get(f"{API}/auth/me", headers=customer.headers).status_code == 200
    digest = hashlib.sha256(_token(customer).encode()).hexdigest()
    with db.connection_context():
        updated = (
            Token.update(expires_at=utcnow() - timedelta(seconds=1))
            .where(Token.token_hash == digest)
            .execute()
        )
    assert updated == 1
    problem = _assert_401(client.get(f"{API}/auth/me", headers=customer.headers))
    assert "expired" in problem["detail"]


def test_revoked_token_is_401(client, make_customer):
    """DELETE /auth/token revokes that token only; reusing it answers 401."""
    customer = make_customer()
    other = _login(client, customer.username, "password-1").json["access_token"]
    response = client.delete(f"{API}/auth/token", headers=customer.headers)
    assert response.status_code == 204
    _assert_401(client.get(f"{API}/auth/me", headers=customer.headers))
    _assert_401(client.delete(f"{API}/auth/token", headers=customer.headers))
    # The user's other token still works.
    response = client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 200
    assert response.json["username"] == customer.username


def test_tokens_are_stored_hashed(client, make_customer):
    """The database holds only a digest of each token, never the token itself."""
    customer = make_customer()
    token = _token(customer)
    with db.connection_context():
        hashes = [t.token_hash for t in Token.select()]
    assert token not in hashes
    assert hashlib.sha256(token.encode()).hexdigest() in hashes


def test_wrong_password_and_unknown_user_get_the_same_401(client, admin, make_agent):
    """Wrong password, unknown user and a deactivated user are indistinguishable 401s."""
    agent = make_agent()
    assert (
        client.patch(
            f"{API}/agents/{agent.agent_id}", json={"active": False}, headers=admin.headers
        ).status_code
        == 200
    )
    responses = [
        _login(client, "admin", "wrong-password"),
        _login(client, "nobody-here", "admin-password-1"),
        _login(client, agent.username, "password-1"),
    ]
    bodies = [_assert_401(r) for r in responses]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["detail"] == "wrong username or password"
    assert len({r.headers["WWW-Authenticate"] for r in responses}) == 1


def test_login_returns_a_working_token(client, admin):
    """POST /auth/token returns a bearer token, its lifetime and the user."""
    response = _login(client, "admin", "admin-password-1")
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    assert body["user"]["id"] == admin.user_id
    assert body["user"]["role"] == "admin"
    me = client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json["username"] == "admin"


# --- customers -----------------------------------------------------------------------


def test_customer_may_only_cancel_its_own_placed_order(client, admin, make_customer, place_order):
    """A customer may cancel its own order while placed; any other move is 403."""
    customer = make_customer()
    order = place_order(customer)
    with nothing_written():
        for target in ("confirmed", "rejected"):
            problem = assert_problem(set_status(client, customer, order["id"], target), 403)
            assert problem["allowed"] == ["cancelled"]

    confirmed = walk_to(client, admin, place_order(customer)["id"], "confirmed")
    with nothing_written():
        for target in ("cancelled", "preparing"):
            problem = assert_problem(set_status(client, customer, confirmed["id"], target), 403)
            assert problem["allowed"] == []

    response = set_status(client, customer, order["id"], "cancelled", reason="changed my mind")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "cancelled"


def test_customer_cannot_see_another_customers_order(client, admin, make_customer, place_order):
    """Another customer's order (or an admin's) is 404 to a customer, and absent from its list."""
    alice, bob = make_customer(), make_customer()
    mine = place_order(alice)
    theirs = place_order(bob)
    admins = place_order(admin)
    with nothing_written():
        for other in (theirs, admins):
            assert_problem(client.get(f"{API}/orders/{other['id']}", headers=alice.headers), 404)
            assert_problem(client.get(f"{API}/orders/{other['id']}/history", headers=alice.headers), 404)
            assert_problem(set_status(client, alice, other["id"], "cancelled"), 404)
    listed = client.get(f"{API}/orders", headers=alice.headers).json["orders"]
    assert [o["id"] for o in listed] == [mine["id"]]
    # Filters cannot widen what a customer sees.
    for query in ({"q": theirs["id"]}, {"status": "placed"}, {"q": "Zo"}):
        listed = client.get(f"{API}/orders", query_string=query, headers=alice.headers).json
        assert theirs["id"] not in [o["id"] for o in listed["orders"]]
    # The owner does see it.
    assert get_order(client, bob, theirs["id"])["id"] == theirs["id"]


def test_customer_cannot_assign_or_manage(client, admin, make_customer, make_agent, place_order):
    """Customers get 403 on assignment, agents, users and the event log."""
    customer = make_customer()
    agent = make_agent()
    order = walk_to(client, admin, place_order(customer)["id"], "confirmed")
    h = customer.headers
    with nothing_written():
        assert_problem(assign(client, customer, order["id"], agent.agent_id), 403)
        assert_problem(client.delete(f"{API}/orders/{order['id']}/agent", headers=h), 403)
        assert_problem(client.get(f"{API}/agents", headers=h), 403)
        assert_problem(client.get(f"{API}/agents/{agent.agent_id}/orders", headers=h), 403)
        assert_problem(client.patch(f"{API}/agents/{agent.agent_id}", json={"active": False}, headers=h), 403)
        assert_problem(
            client.post(
                f"{API}/agents",
                json={"name": "Me", "username": "sneaky", "password": "password-1"},
                headers=h,
            ),
            403,
        )
        assert_problem(client.get(f"{API}/events", headers=h), 403)


def test_customer_order_is_owned_by_the_customer(client, make_customer, menu):
    """A customer's new order is readable by that customer and listed for it."""
    customer = make_customer()
    response = client.post(f"{API}/orders", json=menu.order(), headers=customer.headers)
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/v1/orders/{response.json['id']}"
    assert get_order(client, customer, response.json["id"]) == response.json


# --- agents ----------------------------------------------------------------------------


def test_agent_cannot_touch_an_order_not_assigned_to_it(client, admin, make_agent, place_order):
    """An order not assigned to the agent is 404 to it: reading, history and every move."""
    mine_agent, other_agent = make_agent(), make_agent()
    unassigned = place_order()
    others = walk_to(client, admin, place_order()["id"], "ready", agent=other_agent)
    with nothing_written():
        for order in (unassigned, others):
            h = mine_agent.headers
            assert_problem(client.get(f"{API}/orders/{order['id']}", headers=h), 404)
            assert_problem(client.get(f"{API}/orders/{order['id']}/history", headers=h), 404)
            for target in ("confirmed", "picked_up", "delivered", "cancelled"):
                assert_problem(set_status(client, mine_agent, order["id"], target), 404)
    listed = client.get(f"{API}/orders", headers=mine_agent.headers).json["orders"]
    assert listed == []
    # Once reassigned to this agent it may pick it up; the previous agent then may not.
    assert assign(client, admin, others["id"], mine_agent.agent_id).status_code == 200
    with nothing_written():
        assert_problem(set_status(client, other_agent, others["id"], "picked_up"), 404)
    assert set_status(client, mine_agent, others["id"], "picked_up").status_code == 200


def test_agent_cannot_make_admin_moves(client, admin, make_agent, place_order):
    """An agent may not confirm, prepare, ready or cancel an order, even one assigned to it."""
    agent = make_agent()
    placed = place_order()
    with nothing_written():
        # It cannot even see an unconfirmed order (only confirmed ones can be assigned).
        assert_problem(set_status(client, agent, placed["id"], "confirmed"), 404)
    order = walk_to(client, admin, place_order()["id"], "confirmed", agent=agent)
    with nothing_written():
        for target in ("preparing", "cancelled"):
            problem = assert_problem(set_status(client, agent, order["id"], target), 403)
            assert problem["allowed"] == []
        problem = assert_problem(set_status(client, agent, order["id"], "confirmed"), 409)
        assert problem["allowed"] == ["preparing", "cancelled"]
    order = walk_to(client, admin, order["id"], "ready")
    with nothing_written():
        problem = assert_problem(set_status(client, agent, order["id"], "cancelled"), 403)
        assert problem["allowed"] == ["picked_up"]


def test_agent_cannot_create_or_assign(client, admin, make_agent, place_order):
    """Agents cannot place orders, assign, read the event log or other agents' worklists."""
    agent, other = make_agent(), make_agent()
    order = walk_to(client, admin, place_order()["id"], "confirmed", agent=agent)
    h = agent.headers
    with nothing_written():
        assert_problem(client.post(f"{API}/orders", json=order_body(), headers=h), 403)
        assert_problem(assign(client, agent, order["id"], other.agent_id), 403)
        assert_problem(client.delete(f"{API}/orders/{order['id']}/agent", headers=h), 403)
        assert_problem(client.get(f"{API}/events", headers=h), 403)
        assert_problem(client.get(f"{API}/agents", headers=h), 403)
        assert_problem(client.get(f"{API}/agents/{other.agent_id}/orders", headers=h), 403)
    own = client.get(f"{API}/agents/{agent.agent_id}/orders", headers=h)
    assert [o["id"] for o in own.json["orders"]] == [order["id"]]


def test_admin_needs_force_for_agent_moves(client, admin, make_agent, place_order):
    """An admin may mark picked_up/delivered only with "force": true."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    with nothing_written():
        problem = assert_problem(set_status(client, admin, order["id"], "picked_up"), 403)
        assert "force" in problem["detail"]
        assert_problem(set_status(client, admin, order["id"], "picked_up", force=False), 403)
    response = set_status(client, admin, order["id"], "picked_up", force=True, reason="phone")
    assert response.status_code == 200, response.json
    with nothing_written():
        assert_problem(set_status(client, admin, order["id"], "delivered"), 403)
    response = set_status(client, admin, order["id"], "delivered", force=True)
    assert response.status_code == 200, response.json
    assert response.json["status"] == "delivered"


def test_only_an_admin_may_force(client, admin, make_agent, make_customer, place_order):
    """ "force": true from a customer or an agent answers 422 naming force; false is harmless."""
    agent = make_agent()
    customer = make_customer()
    mine = place_order(customer)
    assigned = walk_to(client, admin, place_order()["id"], "ready", agent=agent)
    with nothing_written():
        assert_problem(set_status(client, customer, mine["id"], "cancelled", force=True), 422, "force")
        assert_problem(set_status(client, agent, assigned["id"], "picked_up", force=True), 422, "force")
    assert set_status(client, agent, assigned["id"], "picked_up", force=False).status_code == 200
    assert set_status(client, customer, mine["id"], "cancelled", force=False).status_code == 200


# --- agent accounts --------------------------------------------------------------------


def test_deactivating_a_busy_agent_is_409(client, admin, make_agent, place_order):
    """An agent with active orders cannot be deactivated (409 listing them); nothing changes."""
    agent = make_agent()
    order = walk_to(client, admin, place_order()["id"], "preparing", agent=agent)
    with nothing_written():
        problem = assert_problem(
            client.patch(
                f"{API}/agents/{agent.agent_id}",
                json={"active": False, "name": "Renamed"},
                headers=admin.headers,
            ),
            409,
        )
        assert problem["orders"] == [order["id"]]
    # Still logged in, still active, name unchanged.
    me = client.get(f"{API}/agents/{agent.agent_id}", headers=agent.headers)
    assert me.status_code == 200
    assert me.json["active"] is True
    assert me.json["name"] == agent.username.title()


def test_deactivating_an_idle_agent_logs_it_out(client, admin, make_agent, place_order):
    """Deactivating an idle agent revokes its tokens and login; reactivating restores login."""
    agent = make_agent()
    walk_to(client, admin, place_order()["id"], "delivered", agent=agent)
    url = f"{API}/agents/{agent.agent_id}"
    response = client.patch(url, json={"active": False}, headers=admin.headers)
    assert response.status_code == 200, response.json
    assert response.json["active"] is False
    _assert_401(client.get(f"{API}/auth/me", headers=agent.headers))
    _assert_401(client.get(f"{API}/agents/{agent.agent_id}/orders", headers=agent.headers))
    _assert_401(_login(client, agent.username, "password-1"))
    with db.connection_context():
        assert Token.select().where(Token.user == agent.user_id).count() == 0
        assert User.get_by_id(agent.user_id).active is False
    listed = {a["id"]: a for a in client.get(f"{API}/agents", headers=admin.headers).json["agents"]}
    assert listed[agent.agent_id]["active"] is False

    response = client.patch(url, json={"active": True}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json["active"] is True
    # Old tokens stay revoked; a new login works.
    _assert_401(client.get(f"{API}/auth/me", headers=agent.headers))
    assert _login(client, agent.username, "password-1").status_code == 200


# --- accounts ----------------------------------------------------------------------------


def test_signup_creates_a_customer(client, menu):
    """POST /auth/signup creates a customer who can log in and place an order."""
    response = client.post(
        f"{API}/auth/signup",
        json={"username": "newbie", "password": "password-1", "display_name": "Zoë 🍕"},
    )
    assert response.status_code == 201, response.json
    assert response.json["role"] == "customer"
    assert response.json["display_name"] == "Zoë 🍕"
    assert "password" not in response.get_data(as_text=True)
    login = _login(client, "newbie", "password-1")
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    assert client.post(f"{API}/orders", json=menu.order(), headers=headers).status_code == 201


def test_duplicate_username_is_409(client, admin, make_customer, make_agent):
    """Signing up, creating a user or an agent with a taken username answers 409 naming it."""
    customer = make_customer()
    agent = make_agent()
    with nothing_written():
        for taken in (customer.username, agent.username, "admin"):
            assert_problem(
                client.post(f"{API}/auth/signup", json={"username": taken, "password": "password-2"}),
                409,
                "username",
            )
            assert_problem(
                client.post(
                    f"{API}/users",
                    json={"username": taken, "password": "password-2", "role": "admin"},
                    headers=admin.headers,
                ),
                409,
                "username",
            )
        assert_problem(
            client.post(
                f"{API}/agents",
                json={"name": "Dup", "username": customer.username, "password": "password-2"},
                headers=admin.headers,
            ),
            409,
            "username",
        )
    # The original password still works.
    assert _login(client, customer.username, "password-1").status_code == 200


def test_users_endpoint_is_admin_only(client, admin, make_customer, make_agent):
    """POST /users needs an admin; an admin can create admins and customers."""
    customer, agent = make_customer(), make_agent()
    body = {"username": "boss2", "password": "password-1", "role": "admin"}
    with nothing_written():
        _assert_401(client.post(f"{API}/users", json=body))
        assert_problem(client.post(f"{API}/users", json=body, headers=customer.headers), 403)
        assert_problem(client.post(f"{API}/users", json=body, headers=agent.headers), 403)
    before = counts()
    response = client.post(f"{API}/users", json=body, headers=admin.headers)
    assert response.status_code == 201, response.json
    assert response.json["role"] == "admin"
    assert counts()["User"] == before["User"] + 1
    token = _login(client, "boss2", "password-1").json["access_token"]
    assert client.get(f"{API}/events", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_login_sweeps_the_users_expired_tokens(client, make_customer):
    """Logging in deletes that user's expired tokens, so the table does not grow forever."""
    customer = make_customer()
    with db.connection_context():
        Token.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            Token.user == customer.user_id
        ).execute()
        assert Token.select().where(Token.user == customer.user_id).count() == 1
    response = client.post(
        f"{API}/auth/token", json={"username": customer.username, "password": "password-1"}
    )
    assert response.status_code == 200
    with db.connection_context():
        rows = list(Token.select().where(Token.user == customer.user_id))
    assert len(rows) == 1 and rows[0].expires_at > utcnow()
