"""Order operations. Each one is a single transaction that writes the order, its
history row and its outbox rows together (ARCHITECTURE.md, guarantee 1).

Views call these with the authenticated user; the rules themselves come from
``lifecycle`` (moves) and ``access`` (who sees what).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import peewee

from . import access, lifecycle
from .db import db, is_sqlite
from .events import record_order_event, record_worklists
from .models import Agent, IdempotencyKey, Order, OrderHistory, OrderItem, User, new_id, rfc3339, utcnow
from .problems import Problem, field_problem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewOrder:
    customer: dict[str, str]
    items: list[dict[str, Any]]
    currency: str = "USD"
    notes: str = ""

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {"customer": self.customer, "items": self.items, "currency": self.currency, "notes": self.notes},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _locked(order_id: str) -> Order:
    """The order, locked for this transaction (SQLite's BEGIN IMMEDIATE already is)."""
    query = Order.select().where(Order.id == order_id)
    if not is_sqlite():
        query = query.for_update()
    order = query.first()
    if order is None:
        raise Problem(404, "Not Found", f"no order {order_id!r}", slug="order-not-found")
    return order


def _check_version(order: Order, if_match: int | None) -> None:
    if if_match is not None and if_match != order.version:
        raise Problem(
            412,
            "Precondition Failed",
            f"order {order.id} is at version {order.version}, not {if_match}; reload it and retry",
            slug="stale-version",
            current_version=order.version,
        )


def _bump(order: Order, actor: User | None, event: str, *, reason: str = "", **change: Any) -> None:
    """Save a change: version, history row, outbox rows and touched worklists."""
    now = utcnow()
    old_agent = order.agent_id
    from_status = order.status
    for key, value in change.items():
        setattr(order, key, value)
    if "status" in change:
        order.status_times = {**order.status_times, order.status: rfc3339(now)}
        if order.status in lifecycle.TERMINAL:
            order.terminal_at = now
    order.version += 1
    order.updated_at = now
    order.save()
    OrderHistory.create(
        order=order,
        version=order.version,
        event=event,
        at=now,
        actor=actor,
        actor_role=actor.role if actor else "system",
        from_status=from_status,
        to_status=order.status,
        from_agent=old_agent,
        to_agent=order.agent_id,
        reason=reason,
    )
    record_order_event(order, event)
    record_worklists([old_agent, order.agent_id])


def create_order(user: User, new: NewOrder, idempotency_key: str | None = None) -> tuple[Order, bool]:
    """Create an order; returns (order, created). A replayed key returns the original."""
    fingerprint = new.fingerprint()
    try:
        with db.atomic():
            if idempotency_key:
                prior = _replay(user, idempotency_key, fingerprint)
                if prior is not None:
                    return prior, False
            order = _insert_order(user, new)
            if idempotency_key:
                IdempotencyKey.create(user=user, key=idempotency_key, request_hash=fingerprint, order=order)
            return order, True
    except peewee.IntegrityError:
        # A concurrent request with the same key won the race (PostgreSQL).
        if idempotency_key:
            prior = _replay(user, idempotency_key, fingerprint)
            if prior is not None:
                return prior, False
        raise


def _replay(user: User, key: str, fingerprint: str) -> Order | None:
    row = IdempotencyKey.get_or_none(IdempotencyKey.user == user, IdempotencyKey.key == key)
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise Problem(
            422,
            "Idempotency key reused",
            "this Idempotency-Key was already used with a different request body",
            slug="idempotency-key-reused",
            errors=[{"field": "Idempotency-Key", "message": "already used with another body"}],
        )
    return row.order


def _insert_order(user: User, new: NewOrder) -> Order:
    now = utcnow()
    total = sum(item["quantity"] * item["unit_price_cents"] for item in new.items)
    order = Order.create(
        id=new_id("ord"),
        version=1,
        status="placed",
        owner=user if user.role == "customer" else None,
        customer_name=new.customer["name"],
        customer_phone=new.customer["phone"],
        customer_address=new.customer["address"],
        notes=new.notes,
        currency=new.currency,
        total_cents=total,
        status_times={"placed": rfc3339(now)},
        created_at=now,
        updated_at=now,
    )
    OrderItem.insert_many(
        [{"order": order.id, "position": i, **item} for i, item in enumerate(new.items)]
    ).execute()
    OrderHistory.create(
        order=order,
        version=1,
        event="order.created",
        at=now,
        actor=user,
        actor_role=user.role,
        to_status="placed",
    )
    record_order_event(order, "order.created")
    return order


def change_status(
    user: User,
    order_id: str,
    target: str,
    *,
    reason: str = "",
    force: bool = False,
    if_match: int | None = None,
) -> Order:
    with db.atomic():
        order = _locked(order_id)
        access.require_visible(user, order)
        _check_version(order, if_match)
        if not lifecycle.is_transition(order.status, target):
            raise Problem(
                409,
                "Transition not allowed",
                f"an order in {order.status!r} cannot move to {target!r}",
                slug="invalid-transition",
                status_now=order.status,
                allowed=lifecycle.next_statuses(order.status),
            )
        if force and user.role != "admin":
            raise field_problem("force", "only an admin may force a transition")
        if not lifecycle.role_may_move(user.role, order.status, target, force=force):
            hint = ' (an admin may send "force": true)' if user.role == "admin" else ""
            raise Problem(
                403,
                "Forbidden",
                f"a {user.role} may not move an order from {order.status!r} to {target!r}{hint}",
                slug="move-forbidden",
                allowed=lifecycle.moves_for(user.role, order.status),
            )
        if target in lifecycle.NEEDS_AGENT and order.agent_id is None:
            raise Problem(
                409,
                "No agent assigned",
                f"order {order.id} needs an assigned agent before it can be {target!r}",
                slug="no-agent",
                allowed=lifecycle.next_statuses(order.status),
            )
        _bump(order, user, "order.status_changed", reason=reason, status=target)
        return order


def _require_assignable(order: Order) -> None:
    if order.status not in lifecycle.ASSIGNABLE:
        raise Problem(
            409,
            "Not assignable",
            f"an order in {order.status!r} cannot be (re)assigned or unassigned; "
            f"allowed in {sorted(lifecycle.ASSIGNABLE)}",
            slug="not-assignable",
            status_now=order.status,
            allowed=lifecycle.next_statuses(order.status),
        )


def assign(
    user: User, order_id: str, agent_id: str, *, reason: str = "", if_match: int | None = None
) -> Order:
    with db.atomic():
        order = _locked(order_id)
        _check_version(order, if_match)
        agent = Agent.get_or_none(Agent.id == agent_id)
        if agent is None:
            raise field_problem("agent_id", f"no agent {agent_id!r}")
        if not agent.active:
            raise field_problem("agent_id", f"agent {agent_id!r} is deactivated")
        _require_assignable(order)
        if order.agent_id == agent.id:
            return order  # already assigned: nothing changes, nothing is published
        _bump(order, user, "order.assigned", reason=reason, agent=agent.id)
        return order


def unassign(user: User, order_id: str, *, reason: str = "", if_match: int | None = None) -> Order:
    with db.atomic():
        order = _locked(order_id)
        _check_version(order, if_match)
        _require_assignable(order)
        if order.agent_id is None:
            return order
        _bump(order, user, "order.unassigned", reason=reason, agent=None)
        return order
