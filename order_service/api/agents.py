"""/agents: delivery agents, their presence and worklists."""

from __future__ import annotations

from datetime import datetime
from types import EllipsisType

import peewee
from flask import Response, current_app, jsonify

from order_service.accounts import broker_logins, users
from order_service.api import schemas
from order_service.api.common import BEARER, blueprint
from order_service.api.problems import field_problem
from order_service.api.security import current_user, require
from order_service.dispatch.presence import presence_dict
from order_service.errors import Conflict, Forbidden, NotFound
from order_service.orders.events import order_dict, record_worklists
from order_service.store.db import db
from order_service.store.models import Agent, MqttCredential, Order, User, new_id, rfc3339, tuple_rows, utcnow

bp = blueprint("agents", "Delivery agents")


def agent_dict(
    agent: Agent, active_orders: int | None = None, mqtt_issued_at: datetime | None | EllipsisType = ...
) -> dict:
    if active_orders is None:
        active_orders = agent.active_orders().count()
    if mqtt_issued_at is ...:
        credential = MqttCredential.get_or_none(MqttCredential.agent == agent.id)
        mqtt_issued_at = credential.created_at if credential else None
    return {
        "id": agent.id,
        "name": agent.name,
        "phone": agent.phone,
        "active": agent.active,
        "username": agent.user.username if agent.user else None,
        "presence": presence_dict(agent),
        "active_orders": active_orders,
        "worklist_version": agent.worklist_version,
        "mqtt": _mqtt_public(agent, mqtt_issued_at),
        "created_at": rfc3339(agent.created_at),
    }


def _mqtt_public(agent: Agent, issued_at: datetime | None) -> dict:
    """What the agent's device connects with, without the secret (shown only when issued)."""
    settings = current_app.config["ORDERBUS"]
    return {
        "url": settings.public_mqtt_urls[0],
        "ws_url": settings.public_mqtt_ws_urls[0],
        "urls": settings.public_mqtt_urls,
        "ws_urls": settings.public_mqtt_ws_urls,
        "client_id": agent.id,
        "username": agent.id,
        "issued_at": rfc3339(issued_at),
    }


def _mqtt_issued(agent: Agent, secret: str) -> dict:
    issued_at = MqttCredential.get_by_id(agent.id).created_at
    return {**_mqtt_public(agent, issued_at), "password": secret}


def _agent(agent_id: str) -> Agent:
    agent = Agent.get_or_none(Agent.id == agent_id)
    if agent is None:
        raise NotFound("agent", agent_id)
    return agent


@bp.post("/agents", responses={201: schemas.AgentOut}, security=BEARER)
@require("admin")
def create_agent(body: schemas.AgentCreate) -> Response:
    """Create a delivery agent, its REST login (role agent) and its device's broker login.

    The response's ``mqtt.password`` is shown this once; only a hash is kept.
    """
    try:
        with db.atomic():
            user = users.create_user(body.username, body.password, "agent", body.name)
            agent = Agent.create(id=new_id("agt"), user=user, name=body.name, phone=body.phone)
            secret = broker_logins.issue_agent(agent)
            # Publish the (empty) worklist so the device has retained state from day one.
            record_worklists([agent.id])
    except peewee.IntegrityError:
        raise field_problem("username", f"{body.username!r} is taken", status=409) from None
    broker_logins.sync_files(current_app.config["ORDERBUS"])
    agent = Agent.get_by_id(agent.id)
    response = jsonify({**agent_dict(agent, 0), "mqtt": _mqtt_issued(agent, secret)})
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/agents/{agent.id}"
    return response


@bp.get("/agents", responses={200: schemas.AgentList}, security=BEARER)
@require("admin")
def list_agents():
    """Every agent with its presence (online/offline as last seen on the broker)."""
    counts = dict(
        tuple_rows(
            Order.active()
            .select(Order.agent, peewee.fn.COUNT(Order.id))
            .where(Order.agent.is_null(False))
            .group_by(Order.agent)
        )
    )
    issued = dict(
        tuple_rows(
            MqttCredential.select(MqttCredential.agent, MqttCredential.created_at).where(
                MqttCredential.agent.is_null(False)
            )
        )
    )
    agents = Agent.select(Agent, User).join(User, peewee.JOIN.LEFT_OUTER).order_by(Agent.name)
    return jsonify(agents=[agent_dict(a, counts.get(a.id, 0), issued.get(a.id)) for a in agents])


def _self_or_admin(agent: Agent) -> None:
    user = current_user()
    if user.role == "admin" or (user.role == "agent" and agent.user_id == user.id):
        return
    raise Forbidden("only admins and the agent itself may read this")


@bp.get("/agents/<agent_id>", responses={200: schemas.AgentOut}, security=BEARER)
@require("admin", "agent")
def get_agent(path: schemas.AgentPath) -> Response:
    agent = _agent(path.agent_id)
    _self_or_admin(agent)
    return jsonify(agent_dict(agent))


@bp.get("/agents/<agent_id>/orders", responses={200: schemas.Worklist}, security=BEARER)
@require("admin", "agent")
def agent_orders(path: schemas.AgentPath) -> Response:
    """The agent's worklist: every non-terminal order assigned to it."""
    agent = _agent(path.agent_id)
    _self_or_admin(agent)
    return jsonify(
        agent_id=agent.id,
        version=agent.worklist_version,
        orders=[order_dict(o) for o in agent.active_orders()],
        offers=[order_dict(o) for o in Order.offered_to(agent.id)],
    )


@bp.patch("/agents/<agent_id>", responses={200: schemas.AgentOut}, security=BEARER)
@require("admin")
def update_agent(path: schemas.AgentPath, body: schemas.AgentPatch) -> Response:
    """Rename, change phone, deactivate or reactivate.

    Deactivating logs the agent out and deletes its device's broker login; after
    reactivating, issue a new one with POST /agents/<id>/mqtt-credentials.
    """
    with db.atomic():
        agent = _agent(path.agent_id)
        if body.active is False and agent.active:
            live = [o.id for o in agent.active_orders()]
            if live:
                raise Conflict(
                    f"reassign or unassign {', '.join(live)} before deactivating {agent.id}",
                    title="Agent has active orders",
                    slug="agent-busy",
                    orders=live,
                )
        for field in ("name", "phone", "active"):
            value = getattr(body, field)
            if value is not None:
                setattr(agent, field, value)
        agent.updated_at = utcnow()
        agent.save()
        if body.active is not None and agent.user_id:
            User.update(active=body.active).where(User.id == agent.user_id).execute()
            if not body.active:
                users.revoke_all(agent.user_id)
        if body.active is False:  # its device secret dies with it; reactivating needs a new one
            MqttCredential.delete().where(MqttCredential.agent == agent.id).execute()
    if body.active is not None:  # a deactivated agent's device login leaves the broker's files
        broker_logins.sync_files(current_app.config["ORDERBUS"])
    return jsonify(agent_dict(agent))


@bp.post(
    "/agents/<agent_id>/mqtt-credentials",
    responses={201: schemas.AgentMqttCredentials},
    security=BEARER,
)
@require("admin", "agent")
def rotate_mqtt_credentials(path: schemas.AgentPath) -> Response:
    """Issue a new broker secret for the agent's device; the previous one stops working at once.

    Admins may rotate any agent's; an agent may rotate its own (a new device).
    """
    agent = _agent(path.agent_id)
    _self_or_admin(agent)
    if not agent.active:
        raise Conflict(f"reactivate {agent.id} first", title="Agent is deactivated", slug="agent-inactive")
    secret = broker_logins.issue_agent(agent)
    broker_logins.sync_files(current_app.config["ORDERBUS"])
    response = jsonify(agent_id=agent.id, mqtt=_mqtt_issued(agent, secret))
    response.status_code = 201
    return response
