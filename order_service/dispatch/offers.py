"""Offers: an order offered to one or more agents, who accept or decline over REST.

An offer is not a status. The order keeps its status, has no agent, and carries
``offer: {"agent_ids", "offered_at", "expires_at"}``; each offered agent finds it in
the ``offers`` of its worklist (``agents/<id>/assigned``). The first agent to accept
gets the order (``order.assigned``); an agent that accepts after that gets 409
``offer-taken``. A decline (``order.offer_declined``) removes that agent from the
offer; when nobody is left, or the offer expires, or the offered agent goes offline
(``order.offer_expired``), the order is back to unassigned, with a history row
giving the reason, and auto-assignment (when on) offers it to someone else.

Each operation is one transaction on the locked order, like those in orders.py;
the timers re-check the order inside it, so a duplicate tick changes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from order_service import lifecycle
from order_service.errors import Conflict, NotFound
from order_service.orders import access
from order_service.orders.service import (
    NO_OFFER,
    active_agent,
    bump,
    check_version,
    close_offers,
    locked,
    require_assignable,
)
from order_service.store.db import db, is_sqlite
from order_service.store.models import Agent, Order, OrderOffer, User, rfc3339, utcnow

logger = logging.getLogger(__name__)

# What an agent is told when its answer comes too late, by the state of its offer row.
_ENDED = {
    "accepted": ("Offer already accepted", "you accepted this offer; the order has moved on since"),
    "declined": ("Offer declined", "you declined this offer"),
    "expired": ("Offer expired", "this offer expired before your answer"),
    "taken": ("Offer taken", "another agent accepted this offer first"),
    "withdrawn": ("Offer withdrawn", "this offer was withdrawn"),
}


def offer(
    user: User | None,
    order_id: str,
    agent_ids: list[str],
    *,
    seconds: int,
    reason: str = "",
    if_match: int | None = None,
    now: datetime | None = None,
    field: str = "agent_ids",
) -> Order:
    """Offer the order to these agents for ``seconds``; replaces any assignment or pending offer.
    ``field`` names the request field a bad agent id came from."""
    now = now or utcnow()
    ids = list(dict.fromkeys(agent_ids))
    with db.atomic():
        order = locked(order_id)
        check_version(order, if_match)
        for agent_id in ids:
            active_agent(agent_id, field)
        require_assignable(order)
        if ids == [order.agent_id] and not order.offer_agents:
            return order  # already this agent's: nothing to offer, nothing is published
        return _make_offer(user, order, ids, seconds=seconds, reason=reason, now=now)


def _make_offer(
    user: User | None, order: Order, ids: list[str], *, seconds: int, reason: str, now: datetime
) -> Order:
    expires = now + timedelta(seconds=seconds)
    replaced = close_offers(order, "withdrawn", reason="offered again", now=now)
    for agent_id in ids:
        OrderOffer.create(order=order, agent=agent_id, offered_at=now, expires_at=expires)
    said = f"offered to {', '.join(ids)} until {rfc3339(expires)}"
    bump(
        order,
        user,
        "order.offered",
        reason=f"{said}: {reason}" if reason else said,
        touch=replaced,
        now=now,
        agent=None,
        offer_agents=ids,
        offered_at=now,
        offer_expires_at=expires,
    )
    return order


def offer_if_waiting(
    order_id: str, agent_id: str, *, seconds: int, cap: int, reason: str, now: datetime
) -> Order | None:
    """Auto-assignment's offer: only if the order still waits (no agent, no offer) and the
    agent is still online, active and under the cap, all checked inside the transaction."""
    with db.atomic():
        order = locked(order_id)
        if order.agent_id or order.offer_agents or order.status not in lifecycle.ASSIGNABLE:
            return None
        agent_query = Agent.select().where(Agent.id == agent_id)
        if not is_sqlite():
            agent_query = agent_query.for_update()  # two relays: one offer at a time per agent
        agent = agent_query.first()
        if agent is None or not agent.active or agent.presence != "online":
            return None
        if load(agent_id) >= cap:
            return None
        return _make_offer(None, order, [agent_id], seconds=seconds, reason=reason, now=now)


def load(agent_id: str) -> int:
    """An agent's active orders plus its pending offers (what the cap limits)."""
    return Order.active_for_agent(agent_id).count() + (
        OrderOffer.select().where((OrderOffer.agent == agent_id) & (OrderOffer.state == "pending")).count()
    )


def _answerable(user: User, order_id: str) -> tuple[Order, OrderOffer, str]:
    """The locked order and this agent's latest offer row for it; 404 when it never had one."""
    order = locked(order_id)
    agent_id = access.agent_id_of(user)
    row = OrderOffer.latest(order_id, agent_id) if agent_id else None
    if row is None or agent_id is None:
        # Never offered to this agent: as for any order it may not see.
        raise NotFound("order", order_id)
    return order, row, agent_id


def _require_pending(row: OrderOffer, now: datetime) -> None:
    state = "expired" if row.state == "pending" and row.expires_at <= now else row.state
    if state != "pending":
        title, detail = _ENDED[state]
        raise Conflict(detail, title=title, slug=f"offer-{state}", offer_state=state)


def accept(user: User, order_id: str, *, now: datetime | None = None) -> Order:
    """The agent takes the order. Exactly one of several racing agents wins; the others get 409."""
    now = now or utcnow()
    with db.atomic():
        order, row, agent_id = _answerable(user, order_id)
        if row.state == "accepted" and order.agent_id == agent_id:
            return order  # a retry of a successful accept: same answer, nothing written
        _require_pending(row, now)
        OrderOffer.update(state="accepted", answered_at=now).where(OrderOffer.id == row.id).execute()
        others = close_offers(order, "taken", reason=f"accepted by {agent_id}", now=now)
        bump(
            order,
            user,
            "order.assigned",
            reason="accepted the offer",
            touch=others,
            now=now,
            agent=agent_id,
            **NO_OFFER,
        )
        return order


def decline(user: User, order_id: str, *, reason: str = "", now: datetime | None = None) -> Order:
    """The agent turns the offer down; the others offered it (if any) may still accept."""
    now = now or utcnow()
    with db.atomic():
        order, row, agent_id = _answerable(user, order_id)
        _require_pending(row, now)
        OrderOffer.update(state="declined", answered_at=now, reason=reason).where(
            OrderOffer.id == row.id
        ).execute()
        remaining = [a for a in order.offer_agents or [] if a != agent_id]
        said = f"declined by {agent_id}" + (f": {reason}" if reason else "")
        if not remaining:
            said += "; the order is unassigned again"
        change = {"offer_agents": remaining} if remaining else NO_OFFER
        bump(order, user, "order.offer_declined", reason=said, touch=[agent_id], now=now, **change)
        return order


def expire_due(now: datetime) -> list[str]:
    """Expire every offer whose time is up (timer). Returns the orders whose offer expired."""
    due = [
        o.id
        for o in Order.select(Order.id).where(
            Order.offer_expires_at.is_null(False) & (Order.offer_expires_at <= now)
        )
    ]
    expired = []
    for order_id in due:
        with db.atomic():
            order = locked(order_id)
            if not order.offer_agents or order.offer_expires_at is None or order.offer_expires_at > now:
                continue  # answered, withdrawn or offered again since the scan
            agents = close_offers(order, "expired", reason="no answer in time", now=now)
            said = f"offer to {', '.join(agents)} expired unanswered; the order is unassigned again"
            bump(order, None, "order.offer_expired", reason=said, touch=agents, now=now, **NO_OFFER)
            expired.append(order_id)
    return expired


def expire_for_agent(agent_id: str, why: str, now: datetime) -> list[str]:
    """End this agent's pending offers (it went offline). Returns the orders concerned."""
    concerned = [o.id for o in Order.offered_to(agent_id).select(Order.id)]
    ended = []
    for order_id in concerned:
        with db.atomic():
            order = locked(order_id)
            if agent_id not in (order.offer_agents or []):
                continue
            close_offers(order, "expired", agents=[agent_id], reason=why, now=now)
            remaining = [a for a in order.offer_agents if a != agent_id]
            said = f"offer to {agent_id} ended: {why}"
            if not remaining:
                said += "; the order is unassigned again"
            change = {"offer_agents": remaining} if remaining else NO_OFFER
            bump(order, None, "order.offer_expired", reason=said, touch=[agent_id], now=now, **change)
            ended.append(order_id)
    return ended
