"""Agent presence the server trusts: device messages plus a heartbeat timeout.

A device publishes ``{"agent_id", "state": "online", "at"}`` (retained) on its own
``agents/<id>/presence`` when it connects and again every
``ORDERBUS_PRESENCE_HEARTBEAT_SECONDS`` (the heartbeat), and registers ``offline``
as its last will. The relay, subscribed to ``agents/+/presence``, hands each message
to :func:`record`. Because a broker may not enforce keep-alive (amqtt does not, so a
device that vanishes silently never gets its will published), the timer marks an
agent offline when nothing was heard for ``ORDERBUS_PRESENCE_TIMEOUT_SECONDS``
(:func:`expire_silent`). Nothing is published for a server-side offline: the ACL
lets only the device write its presence topic. ``GET /agents`` shows the state, since
when, the last time the device was heard and who decided (``device`` or ``timeout``).

Going offline ends the agent's pending offers (``order.offer_expired``), so an
offline agent neither receives nor holds offers; coming online lets auto-assignment
offer it the orders that were waiting.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from order_service.dispatch import offers
from order_service.store.db import db
from order_service.store.models import Agent, rfc3339

logger = logging.getLogger(__name__)

STATES = ("online", "offline")


def presence_dict(agent: Agent) -> dict:
    """The ``presence`` of an agent in the REST API."""
    return {
        "state": agent.presence or "unknown",
        "at": rfc3339(agent.presence_at),
        "last_seen": rfc3339(agent.last_seen_at),
        "source": agent.presence_source,
    }


def record(
    agent_id: str,
    state: str,
    *,
    heard_at: datetime,
    sent_at: datetime | None,
    retained: bool,
    timeout_seconds: int,
) -> bool:
    """Apply one presence message; return True when the agent came online.

    A live message means the device was heard now. A retained one (replayed by the
    broker on subscribe) was heard when it was sent: its ``at``, never later than now;
    an ``online`` older than the timeout is stale (the device may be long gone) and
    does not make the agent online.
    """
    if state not in STATES:
        return False
    seen = min(sent_at, heard_at) if (retained and sent_at is not None) else heard_at
    with db.atomic():
        agent = Agent.get_or_none(Agent.id == agent_id)
        if agent is None:
            return False
        if state == "online":
            last_seen = max(agent.last_seen_at or seen, seen)
            if seen < heard_at - timedelta(seconds=timeout_seconds):
                Agent.update(last_seen_at=last_seen).where(Agent.id == agent_id).execute()
                return False
            came_online = agent.presence != "online"
            Agent.update(
                presence="online",
                presence_at=heard_at if came_online else agent.presence_at,
                presence_source="device",
                last_seen_at=last_seen,
            ).where(Agent.id == agent_id).execute()
            if came_online:
                logger.info("agent %s is online", agent_id)
            return came_online
        went_offline = agent.presence != "offline"
        Agent.update(
            presence="offline",
            presence_at=heard_at if went_offline else agent.presence_at,
            presence_source="device",
        ).where(Agent.id == agent_id).execute()
        if went_offline:
            logger.info("agent %s is offline (device)", agent_id)
            offers.expire_for_agent(agent_id, "the agent went offline", heard_at)
        return False


def expire_silent(timeout_seconds: int, now: datetime) -> list[str]:
    """Mark offline every online agent not heard from for the timeout (timer); return them."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    silent = (Agent.presence == "online") & (
        (Agent.last_seen_at < cutoff) | (Agent.last_seen_at.is_null() & (Agent.presence_at < cutoff))
    )
    gone = []
    for agent in Agent.select(Agent.id).where(silent):
        with db.atomic():
            # Conditional: a heartbeat that arrived since the scan keeps the agent online.
            changed = (
                Agent.update(presence="offline", presence_at=now, presence_source="timeout")
                .where((Agent.id == agent.id) & silent)
                .execute()
            )
            if changed:
                logger.info("agent %s is offline (no heartbeat for %d s)", agent.id, timeout_seconds)
                offers.expire_for_agent(agent.id, f"no heartbeat for {timeout_seconds} s", now)
                gone.append(agent.id)
    return gone
