"""Order operations. Each one is a single transaction that writes the order, its
history row and its outbox rows together (ARCHITECTURE.md, guarantee 1).

Views call these with the authenticated user; the rules themselves come from
``lifecycle`` (moves) and ``access`` (who sees what).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import peewee

from order_service import lifecycle
from order_service.errors import (
    Conflict,
    DomainError,
    Forbidden,
    IllegalTransition,
    InvalidField,
    NotFound,
    StaleVersion,
    Unprocessable,
)
from order_service.orders import access, eta, placing, proof
from order_service.orders.eta import DispatchConfig
from order_service.orders.events import record_order_event, record_worklists
from order_service.orders.feed import record_customer_feed
from order_service.orders.placing import Business, NewOrder, OrderDraft, draft_order, write_order
from order_service.store import group
from order_service.store.db import db
from order_service.store.inserts import Insert, Select, Update
from order_service.store.models import (
    Agent,
    IdempotencyKey,
    Order,
    OrderHistory,
    OrderItem,
    OrderOffer,
    User,
    rfc3339,
    utcnow,
)

logger = logging.getLogger(__name__)


# The statements of a change to an order, their SQL built once (store/inserts.py).
_LOCK_ORDER = Select(Order, "id", for_update=True)
_ORDER_ITEMS = Select(OrderItem, "order", order_by="position")
_SAVE_ORDER = Update(Order)
_PENDING_OFFERS = Select(OrderOffer, "order", "state", order_by="id")
_AGENT = Select(Agent, "id")


def locked(order_id: str) -> Order:
    """The order, locked for this transaction (SQLite's BEGIN IMMEDIATE already is)."""
    order = _LOCK_ORDER.one(order_id)
    if order is None:
        raise NotFound("order", order_id)
    return order


def with_items(order: Order) -> Order:
    """The order with its lines read (one statement, built once), for ``order_dict``."""
    if "items" not in order.__dict__:
        order.items = _ORDER_ITEMS.all(order.id)  # as prefetch() keeps them
    return order


def check_version(order: Order, if_match: int | None) -> None:
    """Refuse a write made against an older version of the order (``If-Match``)."""
    if if_match is not None and if_match != order.version:
        raise StaleVersion(order.id, order.version, if_match)


# The order fields of "no pending offer" (see offers.py).
NO_OFFER: dict[str, Any] = {"offer_agents": None, "offered_at": None, "offer_expires_at": None}


def close_offers(
    order: Order,
    state: str,
    *,
    agents: Iterable[str] | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> list[str]:
    """End the pending offer rows of this order (only these agents' when given); return whose."""
    rows = _PENDING_OFFERS.all(order.id, "pending")  # OrderOffer.pending_for, built once
    if agents is not None:
        wanted = set(agents)
        rows = [r for r in rows if r.agent_id in wanted]
    if rows:
        OrderOffer.update(state=state, answered_at=now or utcnow(), reason=reason).where(
            OrderOffer.id.in_([r.id for r in rows])
        ).execute()
    return [r.agent_id for r in rows]


def bump(
    order: Order,
    actor: User | None,
    event: str,
    *,
    reason: str = "",
    touch: Iterable[str | None] = (),
    delay: str | None = None,
    now: datetime | None = None,
    **change: Any,
) -> None:
    """Save a change: version, history row, outbox rows and touched worklists.

    The worklists touched are those of the agent before and after, of every agent
    the order is offered to before and after, and of the agents in ``touch``.
    """
    now = now or utcnow()
    old_agent = order.agent_id
    old_offered = list(order.offer_agents or [])
    from_status = order.status
    for key, value in change.items():
        setattr(order, key, value)
    if "status" in change:
        order.status_times = {**order.status_times, order.status: rfc3339(now)}
        if order.status in lifecycle.TERMINAL:
            order.terminal_at = now
    order.version += 1
    order.updated_at = now
    _SAVE_ORDER.save(order)
    _INSERT_CHANGE.rows(
        [
            {
                "order": order.id,
                "version": order.version,
                "event": event,
                "at": now,
                "actor": actor.id if actor else None,
                "actor_role": actor.role if actor else "system",
                "from_status": from_status,
                "to_status": order.status,
                "from_agent": old_agent,
                "to_agent": order.agent_id,
                "reason": reason,
            }
        ]
    )
    record_order_event(with_items(order), event, reason=reason, delay=delay)
    record_customer_feed(order, event)
    record_worklists([old_agent, order.agent_id, *old_offered, *(order.offer_agents or []), *touch], order)


def create_order(
    user: User,
    new: NewOrder,
    idempotency_key: str | None = None,
    business: Business = placing.DEFAULT_BUSINESS,
) -> tuple[Order, bool]:
    """Create an order; returns (order, created). A replayed key returns the original.

    The server prices every line (``catalog.pricing``); the order gets the next number
    of its business day (``numbers``). A refusal writes nothing.

    The order, its rows and its event are made before the transaction
    (:func:`placing.draft_order`): writers take turns, so what a turn holds bounds how many
    orders a second the service can write. The turn holds the replay check, the number and
    the writes; turns of this process's threads that wait at once share one transaction
    (:mod:`~order_service.store.group`), each in a savepoint."""
    fingerprint = new.fingerprint() if idempotency_key else ""  # only a key needs it
    try:
        draft: OrderDraft | DomainError = draft_order(user, new, business)
    except DomainError as refused:
        if not idempotency_key:
            raise
        draft = refused  # unless the key replays an order placed before: checked in the turn

    def turn() -> tuple[Order, bool]:
        with db.atomic():
            if idempotency_key:
                prior = _replay(user, idempotency_key, fingerprint)
                if prior is not None:
                    return prior, False
            if isinstance(draft, DomainError):
                raise draft
            order = write_order(draft)
            if idempotency_key:
                _INSERT_KEY.rows(
                    [{"user": user.id, "key": idempotency_key, "request_hash": fingerprint, "order": order}]
                )
            return order, True

    try:
        return group.run(turn)  # with the orders of this process's other threads, if any wait
    except peewee.IntegrityError:
        # A concurrent request with the same key won the race (PostgreSQL).
        if idempotency_key:
            prior = _replay(user, idempotency_key, fingerprint)
            if prior is not None:
                return prior, False
        raise


_IDEMPOTENCY_KEY = Select(IdempotencyKey, "user", "key")
_ORDER = Select(Order, "id")


def _replay(user: User, key: str, fingerprint: str) -> Order | None:
    row = _IDEMPOTENCY_KEY.one(user.id, key)
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was already used with a different request body",
            title="Idempotency key reused",
            slug="idempotency-key-reused",
            errors=[{"field": "Idempotency-Key", "message": "already used with another body"}],
        )
    return with_items(_ORDER.one(row.order_id))


_INSERT_KEY = Insert(IdempotencyKey, ("user", "key", "request_hash", "order"))
_INSERT_CHANGE = Insert(  # every column of a change's history row
    OrderHistory,
    "order version event at actor actor_role from_status to_status from_agent to_agent reason".split(),
)


def change_status(
    user: User,
    order_id: str,
    target: str,
    *,
    reason: str = "",
    force: bool = False,
    if_match: int | None = None,
    config: DispatchConfig,
    prep_minutes: int | None = None,
    failure: tuple[str, str] | None = None,
    code: str | None = None,
) -> Order:
    """Move the order; ``prep_minutes`` (with ``confirmed``) overrides the preparation time,
    ``failure`` (reason code, note) is required with ``failed`` and refused otherwise,
    ``code`` (with ``delivered``) is the customer's delivery code (``proof``)."""
    _check_dispatch_fields(target, prep_minutes, failure)

    def turn() -> Order:
        with db.atomic():
            order = locked(order_id)
            access.require_visible(user, order)
            check_version(order, if_match)
            if not lifecycle.is_transition(order.status, target):
                raise IllegalTransition(order.status, target, lifecycle.next_statuses(order.status))
            if force and user.role != "admin":
                raise InvalidField("force", "only an admin may force a transition")
            if not lifecycle.role_may_move(user.role, order.status, target, force=force):
                hint = ' (an admin may send "force": true)' if user.role == "admin" else ""
                raise Forbidden(
                    f"a {user.role} may not move an order from {order.status!r} to {target!r}{hint}",
                    slug="move-forbidden",
                    allowed=lifecycle.moves_for(user.role, order.status),
                )
            if target in lifecycle.NEEDS_AGENT and order.agent_id is None:
                raise Conflict(
                    f"order {order.id} needs an assigned agent before it can be {target!r}",
                    title="No agent assigned",
                    slug="no-agent",
                    allowed=lifecycle.next_statuses(order.status),
                )
            if target == "failed":
                _require_failure(failure)
            now = utcnow()
            why = reason
            change: dict[str, Any] = {"status": target}
            if target == "confirmed":
                change["promised_at"] = eta.promised_ready(now, config, prep_minutes)
            elif target == "picked_up":
                change["eta"] = eta.delivery_eta(now, config, order.delivery_lat, order.delivery_lon)
            elif target == "delivered":
                change.update(proof.on_delivery(order, user, code, config, now))
            elif target == "failed" and failure is not None:
                change["failure_reason"], change["failure_note"] = failure
                said = f"{failure[0]}: {failure[1]}" if failure[1] else failure[0]
                why = reason or said  # the client's own words win; the order keeps the code
            touched: list[str] = []
            if order.offer_agents and target not in lifecycle.ASSIGNABLE:
                touched = close_offers(order, "withdrawn", reason=f"order {target}", now=now)
                change.update(NO_OFFER)
            bump(order, user, "order.status_changed", reason=why, touch=touched, now=now, **change)
            return order

    with proof.counting_wrong_codes(order_id, user, target, code):
        return group.run(turn)  # with the writes of this process's other threads, if any wait


def _check_dispatch_fields(target: str, prep_minutes: int | None, failure: tuple[str, str] | None) -> None:
    if prep_minutes is not None and target != "confirmed":
        raise InvalidField("prep_minutes", "only with status confirmed")
    if failure is not None and target != "failed":
        raise InvalidField("failure", "only with status failed")
    if failure is not None:
        code, note = failure
        if code not in lifecycle.FAILURE_REASONS:
            raise InvalidField("failure.reason", f"one of {list(lifecycle.FAILURE_REASONS)}")
        if code == "other" and not note.strip():
            raise InvalidField("failure.note", "required when the reason is other")


def _require_failure(failure: tuple[str, str] | None) -> None:
    """After the move itself is allowed: a failed delivery must say why."""
    if failure is None:
        raise InvalidField(
            "failure", f"a failed delivery needs a reason, one of {list(lifecycle.FAILURE_REASONS)}"
        )


def require_assignable(order: Order) -> None:
    if order.status not in lifecycle.ASSIGNABLE:
        raise Conflict(
            f"an order in {order.status!r} cannot be (re)assigned or unassigned; "
            f"allowed in {sorted(lifecycle.ASSIGNABLE)}",
            title="Not assignable",
            slug="not-assignable",
            status_now=order.status,
            allowed=lifecycle.next_statuses(order.status),
        )


def active_agent(agent_id: str, field: str) -> Agent:
    """The agent an order may go to; a missing or deactivated one is refused, naming ``field``."""
    agent = _AGENT.one(agent_id)
    if agent is None:
        raise InvalidField(field, f"no agent {agent_id!r}")
    if not agent.active:
        raise InvalidField(field, f"agent {agent_id!r} is deactivated")
    return agent


def assign(
    user: User, order_id: str, agent_id: str, *, reason: str = "", if_match: int | None = None
) -> Order:
    with db.atomic():
        order = locked(order_id)
        check_version(order, if_match)
        agent = active_agent(agent_id, "agent_id")
        require_assignable(order)
        if order.agent_id == agent.id and not order.offer_agents:
            return order  # already assigned: nothing changes, nothing is published
        # A direct assignment ends any pending offer.
        withdrawn = close_offers(order, "withdrawn", reason=f"assigned to {agent.id}")
        bump(order, user, "order.assigned", reason=reason, touch=withdrawn, agent=agent.id, **NO_OFFER)
        return order


def unassign(user: User, order_id: str, *, reason: str = "", if_match: int | None = None) -> Order:
    with db.atomic():
        order = locked(order_id)
        check_version(order, if_match)
        require_assignable(order)
        if order.agent_id is None and not order.offer_agents:
            return order
        # Unassigning also withdraws a pending offer.
        withdrawn = close_offers(order, "withdrawn", reason="unassigned")
        bump(order, user, "order.unassigned", reason=reason, touch=withdrawn, agent=None, **NO_OFFER)
        return order
