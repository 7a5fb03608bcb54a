"""/push and /agents/<id>/push-subscriptions: Web Push for the courier app.

The service's VAPID public key is public (browsers subscribe with it); an agent stores
its own device's subscription, one per device; sending happens in the relay
(``order_service.push.sender``), never here.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify

from order_service.api import push_schemas as schemas
from order_service.api.common import BEARER, blueprint, public
from order_service.api.schemas import AgentPath
from order_service.api.security import current_user, require
from order_service.errors import Forbidden, NotFound
from order_service.push import keys, subscriptions
from order_service.store.models import Agent

bp = blueprint("push", "Web Push to the agents' devices")


def _own(agent_id: str, admin_too: bool = False) -> Agent:
    agent = Agent.get_or_none(Agent.id == agent_id)
    if agent is None:
        raise NotFound("agent", agent_id)
    user = current_user()
    if (user.role == "agent" and agent.user_id == user.id) or (admin_too and user.role == "admin"):
        return agent
    raise Forbidden("only the agent itself may manage its devices' push subscriptions")


@bp.get("/push/key", responses={200: schemas.PushKeyOut})
def push_key() -> Response:
    """The VAPID public key (RFC 8292) to subscribe with: ``applicationServerKey``."""
    return jsonify(public_key=keys.public_key(current_app.config["ORDERBUS"]))


public("push.push_key")


@bp.post(
    "/agents/<agent_id>/push-subscriptions", responses={201: schemas.PushSubscriptionOut}, security=BEARER
)
@require("agent")
def add_subscription(path: AgentPath, body: schemas.PushSubscriptionIn) -> Response:
    """Store this device's push subscription (replacing its previous one).

    The service pushes new assignments and offers to it while the device is not connected
    to the broker. An agent keeps its newest ``ORDERBUS_PUSH_DEVICES_PER_AGENT`` (5)."""
    agent = _own(path.agent_id)
    sub = body.subscription
    saved = subscriptions.save(
        agent.id,
        body.device_id,
        sub.endpoint,
        sub.keys.p256dh,
        sub.keys.auth,
        current_app.config["ORDERBUS"],
    )
    response = jsonify(saved)
    response.status_code = 201
    return response


@bp.get(
    "/agents/<agent_id>/push-subscriptions", responses={200: schemas.PushSubscriptionList}, security=BEARER
)
@require("admin", "agent")
def list_subscriptions(path: AgentPath) -> Response:
    """The agent's devices that take pushes (for the agent itself and admins)."""
    agent = _own(path.agent_id, admin_too=True)
    rows = subscriptions.of_agent(agent.id)
    return jsonify(subscriptions=[subscriptions.subscription_dict(row) for row in rows])


@bp.delete("/agents/<agent_id>/push-subscriptions", responses={204: None}, security=BEARER)
@require("agent")
def remove_subscription(path: AgentPath, query: schemas.DeviceQuery) -> tuple[str, int]:
    """Stop pushes to this device (``?device_id=``); 204 also when it had none."""
    agent = _own(path.agent_id)
    subscriptions.remove(agent.id, query.device_id)
    return "", 204
