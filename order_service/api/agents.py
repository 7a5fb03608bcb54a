"""/agents: delivery agents, their presence and worklists."""

from __future__ import annotations

import peewee
from flask import jsonify

from .. import auth
from ..auth import current_user, require
from ..db import db
from ..events import order_dict, record_worklists
from ..models import Agent, Order, User, new_id, rfc3339, utcnow
from ..presence import presence_dict
from ..problems import Problem, field_problem
from . import schemas
from .common import BEARER, blueprint

bp = blueprint("agents", "Delivery agents")


def agent_dict(agent: Agent, active_orders: int | None = None) -> dict:
    if active_orders is None:
        active_orders = agent.active_orders().count()
    return {
        "id": agent.id,
        "name": agent.name,
        "phone": agent.phone,
        "active": agent.active,
        "username": agent.user.username if agent.user_id else None,
        "presence": presence_dict(agent),
        "active_orders": active_orders,
        "worklist_version": agent.worklist_version,
        "created_at": rfc3339(agent.created_at),
    }


def _agent(agent_id: str) -> Agent:
    agent = Agent.get_or_none(Agent.id == agent_id)
    if agent is None:
        raise Problem(404, "Not Found", f"no agent {agent_id!r}", slug="agent-not-found")
    return agent


@bp.post("/agents", responses={201: schemas.AgentOut}, security=BEARER)
@require("admin")
def create_agent(body: schemas.AgentCreate):
    """Create a delivery agent and its login (role agent)."""
    try:
        with db.atomic():
            user = auth.create_user(body.username, body.password, "agent", body.name)
            agent = Agent.create(id=new_id("agt"), user=user, name=body.name, phone=body.phone)
            # Publish the (empty) worklist so the device has retained state from day one.
            record_worklists([agent.id])
    except peewee.IntegrityError:
        raise field_problem("username", f"{body.username!r} is taken", status=409) from None
    agent = Agent.get_by_id(agent.id)
    response = jsonify(agent_dict(agent, 0))
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/agents/{agent.id}"
    return response


@bp.get("/agents", responses={200: schemas.AgentList}, security=BEARER)
@require("admin")
def list_agents():
    """Every agent with its presence (online/offline as last seen on the broker)."""
    counts = dict(
        Order.active()
        .select(Order.agent, peewee.fn.COUNT(Order.id))
        .where(Order.agent.is_null(False))
        .group_by(Order.agent)
        .tuples()
    )
    agents = Agent.select(Agent, User).join(User, peewee.JOIN.LEFT_OUTER).order_by(Agent.name)
    return jsonify(agents=[agent_dict(a, counts.get(a.id, 0)) for a in agents])


def _self_or_admin(agent: Agent) -> None:
    user = current_user()
    if user.role == "admin" or (user.role == "agent" and agent.user_id == user.id):
        return
    raise Problem(403, "Forbidden", "only admins and the agent itself may read this")


@bp.get("/agents/<agent_id>", responses={200: schemas.AgentOut}, security=BEARER)
@require("admin", "agent")
def get_agent(path: schemas.AgentPath):
    agent = _agent(path.agent_id)
    _self_or_admin(agent)
    return jsonify(agent_dict(agent))


@bp.get("/agents/<agent_id>/orders", responses={200: schemas.Worklist}, security=BEARER)
@require("admin", "agent")
def agent_orders(path: schemas.AgentPath):
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
def update_agent(path: schemas.AgentPath, body: schemas.AgentPatch):
    """Rename, change phone, deactivate (logs the agent out) or reactivate."""
    with db.atomic():
        agent = _agent(path.agent_id)
        if body.active is False and agent.active:
            live = [o.id for o in agent.active_orders()]
            if live:
                raise Problem(
                    409,
                    "Agent has active orders",
                    f"reassign or unassign {', '.join(live)} before deactivating {agent.id}",
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
                auth.revoke_all(agent.user)
    return jsonify(agent_dict(agent))
