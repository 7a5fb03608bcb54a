"""/auth and /users: log in, log out, sign up, create users."""

from __future__ import annotations

import peewee
from flask import Response, current_app, jsonify, request

import contract
from order_service.accounts import broker_logins, users
from order_service.accounts.signups import SignupLimiter
from order_service.api import schemas, security
from order_service.api.common import BEARER, PROBLEM, blueprint, public
from order_service.api.problems import Problem, field_problem
from order_service.api.security import current_user, require
from order_service.errors import Forbidden
from order_service.orders.access import agent_id_of
from order_service.store.models import Token, User, rfc3339

bp = blueprint("auth", "Log in and users")


def user_dict(user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "display_name": user.display_name,
        "agent_id": agent_id_of(user) if user.role == "agent" else None,
    }


@bp.post("/auth/token", responses={200: schemas.TokenOut, 429: PROBLEM})
def login(body: schemas.TokenRequest) -> Response:
    """Exchange username and password for a bearer token.

    A client address that has failed ``ORDERBUS_LOGIN_MAX_FAILURES`` times for a username
    (within ``ORDERBUS_LOGIN_WINDOW_SECONDS``) must then wait 1 s, 2 s, 4 s... between
    attempts (up to ``ORDERBUS_LOGIN_MAX_DELAY_SECONDS``): until then it gets 429 with
    Retry-After. Other addresses are not held back.

    Admins also get ``mqtt``: read-only MQTT-over-WebSocket credentials for the
    dashboard page that logs in, expiring with the token and revoked by logging out.
    Customers get theirs too: a read-only login for their own feed
    (``customers/<user id>/orders``) and the ``catalog``. Another page with the same
    token asks for its own (POST /auth/mqtt-credentials).
    """
    settings = current_app.config["ORDERBUS"]
    address = (request.remote_addr or "")[:64]  # the connection's (or a trusted proxy's word)
    users.check_throttle(body.username, address, settings)
    user = User.get_or_none(User.username == body.username)
    ok = users.verify_password(user, body.password)
    users.record_login(body.username, address, ok, settings.login_window_seconds)
    if not ok or user is None:  # (no user is never ok)
        raise Problem(
            401,
            "Unauthorized",
            "wrong username or password",
            slug="bad-credentials",
            headers={"WWW-Authenticate": 'Bearer realm="orderbus"'},
        )
    token, ttl = users.issue_token(user, security.token_ttl())
    out = {"access_token": token, "token_type": "bearer", "expires_in": ttl, "user": user_dict(user)}
    if user.role in READ_ONLY_LOGINS:
        out["mqtt"] = _broker_login(user, token)
    return jsonify(out)


# The roles whose bearer token brings read-only broker logins: the admin's dashboard
# pages, the customer's shop pages and CLI.
READ_ONLY_LOGINS = {"admin": broker_logins.issue_dashboard, "customer": broker_logins.issue_customer}


def _broker_login(user: User, token: str) -> dict:
    """Read-only broker credentials for a dashboard (admin) or a shop page (customer),
    valid as long as the token: MQTT over WebSocket (``url``), or TCP (``tcp_url``)."""
    settings = current_app.config["ORDERBUS"]
    expires_at = Token.get_by_id(users.token_digest(token)).expires_at
    username, secret = READ_ONLY_LOGINS[user.role](user, users.token_digest(token), expires_at)
    broker_logins.sync_files(settings)
    login = {
        "url": settings.public_mqtt_ws_urls[0],
        "tcp_url": settings.public_mqtt_urls[0],
        "urls": settings.public_mqtt_ws_urls,
        "tcp_urls": settings.public_mqtt_urls,
        "client_id": username,
        "username": username,
        "password": secret,
        "expires_at": rfc3339(expires_at),
    }
    if user.role == "customer":
        login["topics"] = {"orders": contract.customer_orders(user.id), "catalog": contract.CATALOG}
    return login


public("auth.login")


@bp.post("/auth/mqtt-credentials", responses={201: schemas.DashboardMqtt}, security=BEARER)
@require("admin", "customer")
def dashboard_mqtt_credentials():
    """A new read-only broker login for one more dashboard page (admin) or shop page or
    customer CLI (customer), tied to this bearer token.

    An admin's reads ``orders/#`` and ``agents/#``; a customer's reads only its own feed
    (``customers/<user id>/orders``, named in ``topics``) and ``catalog``. Neither
    publishes anything. Both brokers use a login's username as its client id, so two
    pages sharing a login would take each other's connection in turn: every page asks for
    its own when it loads (the ``mqtt`` of POST /auth/token serves the page that logged
    in). It expires with the token and is revoked by logging out; a token keeps its 16
    newest.
    """
    response = jsonify(_broker_login(current_user(), security.bearer_token() or ""))
    response.status_code = 201
    return response


@bp.delete("/auth/token", responses={204: None}, security=BEARER)
@require()
def logout():
    """Revoke the token this request carries (an admin's or a customer's broker logins go with it)."""
    users.revoke_token(security.bearer_token() or "")
    if current_user().role in READ_ONLY_LOGINS:
        broker_logins.sync_files(current_app.config["ORDERBUS"])
    return "", 204


@bp.get("/auth/me", responses={200: schemas.UserOut}, security=BEARER)
@require()
def me():
    return jsonify(user_dict(current_user()))


def _create(body: schemas.SignupRequest, role: str) -> Response:
    try:
        user = users.create_user(body.username, body.password, role, body.display_name)
    except peewee.IntegrityError:
        raise field_problem("username", f"{body.username!r} is taken", status=409) from None
    response = jsonify(user_dict(user))
    response.status_code = 201
    return response


@bp.post("/auth/signup", responses={201: schemas.UserOut, 429: PROBLEM})
def signup(body: schemas.SignupRequest) -> Response:
    """Create a customer account (when ORDERBUS_ALLOW_SIGNUP is on, the default).

    One client address may sign up ``ORDERBUS_SIGNUP_PER_ADDRESS`` times per
    ``ORDERBUS_SIGNUP_WINDOW_SECONDS`` (per API process); past that, 429 with Retry-After."""
    settings = current_app.config["ORDERBUS"]
    if not settings.allow_signup:
        raise Forbidden("sign-up is disabled on this server; ask an admin")
    limiter = current_app.extensions.get("orderbus.signups")
    if limiter is None:
        limiter = current_app.extensions.setdefault(
            "orderbus.signups", SignupLimiter(settings.signup_per_address, settings.signup_window_seconds)
        )
    limiter.take((request.remote_addr or "")[:64])
    return _create(body, "customer")


public("auth.signup")


@bp.post("/users", responses={201: schemas.UserOut}, security=BEARER)
@require("admin")
def create_user(body: schemas.UserCreate) -> Response:
    """Create an admin or customer account (agents: POST /agents)."""
    return _create(body, body.role)
