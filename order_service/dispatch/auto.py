"""The dispatch timers, in one place: :func:`tick`.

The relay process calls ``tick`` from its loop about once a second
(``ORDERBUS_DISPATCH_TICK_SECONDS``) and right after an agent comes online; tests
call it with a chosen ``now``. Each step acts on one order (or agent) per
transaction and re-checks its condition on the locked row, so a duplicate tick, or
two relays ticking at once, never acts twice. In order:

1. presence: agents not heard from for ``ORDERBUS_PRESENCE_TIMEOUT_SECONDS`` go offline
   (their pending offers end);
2. offers whose time is up expire (``order.offer_expired``);
3. auto-assignment (when on) offers each waiting order to one online agent;
4. late-order alerts (``order.delayed``), each rule at most once per order.

Auto-assignment policy. An order waits when it has no agent and no pending offer
and is ``confirmed``, ``preparing`` or ``ready`` (``auto_assign_on: confirmed``, the
default) or ``ready`` (``auto_assign_on: ready``); waiting orders are served oldest
first. The candidates are active agents that are online, whose load (active orders
plus pending offers) is below ``agent_cap``, and that have not already declined or
let expire an offer of this order. The order goes to the candidate with the least
load; ties go to the longest idle (idle since the latest of: its last order
activity, its last offer, the moment it came online), then to the lowest agent id. The offer lasts
``offer_seconds``. With no candidate the order keeps waiting and is offered as
soon as one appears (an agent comes online, finishes an order, or declines another).
Admins' own assignments and offers ignore the cap.

Late-order rules (``delays`` on the order; ``order.delayed`` with ``delay`` = the rule):

* ``unconfirmed``: still ``placed`` ``delay_unconfirmed_seconds`` after it was placed;
* ``unassigned``: ``ready`` without an agent ``delay_unassigned_seconds`` after it became ready;
* ``ready_late``: not ``ready`` yet (``confirmed``/``preparing``) ``delay_late_grace_seconds``
  after its promised ready time (``promised_at``);
* ``delivery_late``: still ``picked_up`` ``delay_late_grace_seconds`` after its estimated
  delivery time (``eta``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import peewee

from order_service import lifecycle
from order_service.config import Settings
from order_service.dispatch import offers, presence
from order_service.dispatch import settings as dispatch_config
from order_service.dispatch.settings import DispatchConfig
from order_service.orders.service import bump, locked
from order_service.store.db import db
from order_service.store.models import Agent, Order, OrderAlert, OrderHistory, OrderOffer, rfc3339, utcnow

logger = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did (for logs and tests)."""

    offline: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    offered: list[tuple[str, str]] = field(default_factory=list)
    delayed: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.offline or self.expired or self.offered or self.delayed)


def tick(settings: Settings, now: datetime | None = None) -> TickReport:
    """Run every timer once, as of ``now`` (default: the current time)."""
    now = now or utcnow()
    report = TickReport()
    # The relay keeps its connection open; a test thread may have none.
    with db.connection_context() if db.is_closed() else contextlib.nullcontext():
        config = dispatch_config.current(settings)
        report.offline = presence.expire_silent(settings.presence_timeout_seconds, now)
        report.expired = offers.expire_due(now)
        if config.auto_assign:
            report.offered = auto_assign(config, now)
        report.delayed = raise_delays(config, now)
    if report:
        logger.info(
            "dispatch: %d offline, %d offers expired, %d offered, %d alerts",
            len(report.offline),
            len(report.expired),
            len(report.offered),
            len(report.delayed),
        )
    return report


# --- auto-assignment ------------------------------------------------------------


@dataclass
class Candidate:
    agent_id: str
    load: int
    idle_since: datetime


def waiting_orders(config: DispatchConfig) -> peewee.ModelSelect[Order]:
    statuses = sorted(lifecycle.ASSIGNABLE) if config.auto_assign_on == "confirmed" else ["ready"]
    return (
        Order.select()
        .where(Order.status.in_(statuses) & Order.agent.is_null() & Order.offer_agents.is_null())
        .order_by(Order.created_at, Order.id)
    )


def candidates(config: DispatchConfig) -> list[Candidate]:
    """Online, active agents under the cap, best first (least load, longest idle, id)."""
    found = []
    for agent in Agent.select().where(Agent.active & (Agent.presence == "online")):
        load = offers.load(agent.id)
        if load >= config.agent_cap:
            continue
        last_activity = _latest(
            OrderHistory.select(peewee.fn.MAX(OrderHistory.at)).where(OrderHistory.to_agent == agent.id),
            OrderOffer.select(peewee.fn.MAX(OrderOffer.offered_at)).where(OrderOffer.agent == agent.id),
        )
        online_since = agent.presence_at or agent.created_at
        idle_since = max(last_activity, online_since) if last_activity else online_since
        found.append(Candidate(agent.id, load, idle_since))
    found.sort(key=lambda c: (c.load, c.idle_since, c.agent_id))
    return found


def _latest(*queries: peewee.SelectBase) -> datetime | None:
    """The latest of several MAX(timestamp) queries (None when all are empty)."""
    found = []
    for query in queries:
        value = query.scalar()
        if isinstance(value, str):  # SQLite hands an aggregate back as text
            value = datetime.fromisoformat(value)
        if value is not None:
            found.append(value)
    return max(found, default=None)


def _refused_by(order_id: str) -> set[str]:
    """Agents that declined or let expire an offer of this order: not asked again automatically."""
    rows = OrderOffer.select(OrderOffer.agent).where(
        (OrderOffer.order == order_id) & OrderOffer.state.in_(["declined", "expired"])
    )
    return {r.agent_id for r in rows}


def auto_assign(config: DispatchConfig, now: datetime) -> list[tuple[str, str]]:
    """Offer each waiting order to the best candidate; return the (order, agent) pairs offered."""
    made = []
    pool = candidates(config)
    for order in waiting_orders(config):
        if not pool:
            break
        refused = _refused_by(order.id)
        choice = next((c for c in pool if c.agent_id not in refused), None)
        if choice is None:
            continue
        reason = (
            f"auto-assignment: {choice.load} active orders and offers (cap {config.agent_cap}), "
            f"idle since {rfc3339(choice.idle_since)}"
        )
        done = offers.offer_if_waiting(
            order.id,
            choice.agent_id,
            seconds=config.offer_seconds,
            cap=config.agent_cap,
            reason=reason,
            now=now,
        )
        if done is None:
            pool = candidates(config)  # something changed under us: look again
            continue
        made.append((order.id, choice.agent_id))
        choice.load += 1
        choice.idle_since = now
        pool = sorted(
            (c for c in pool if c.load < config.agent_cap), key=lambda c: (c.load, c.idle_since, c.agent_id)
        )
    return made


# --- late-order alerts ----------------------------------------------------------


def _since(order: Order, status: str) -> datetime | None:
    value = (order.status_times or {}).get(status)
    return datetime.fromisoformat(value.replace("Z", "")) if value else None


def _rules(config: DispatchConfig, now: datetime) -> dict[str, tuple[peewee.Expression, Callable]]:
    """rule -> (a coarse SQL filter, the exact check on an order); a check returns the reason or None."""
    grace = timedelta(seconds=config.delay_late_grace_seconds)
    rules: dict[str, tuple[peewee.Expression, Callable[[Order], str | None]]] = {}
    placed_limit = timedelta(seconds=config.delay_unconfirmed_seconds)
    ready_limit = timedelta(seconds=config.delay_unassigned_seconds)

    def unconfirmed(o: Order) -> str | None:
        if o.status == "placed" and o.created_at + placed_limit <= now:
            return f"unconfirmed: placed for more than {config.delay_unconfirmed_seconds} s"
        return None

    def unassigned(o: Order) -> str | None:
        ready = _since(o, "ready")
        if o.status == "ready" and o.agent_id is None and ready is not None and ready + ready_limit <= now:
            return f"unassigned: ready without an agent for more than {config.delay_unassigned_seconds} s"
        return None

    if config.delay_unconfirmed_seconds:  # 0: the rule is off
        rules["unconfirmed"] = (
            (Order.status == "placed") & (Order.created_at <= now - placed_limit),
            unconfirmed,
        )
    if config.delay_unassigned_seconds:
        rules["unassigned"] = ((Order.status == "ready") & Order.agent.is_null(), unassigned)

    def ready_late(o: Order) -> str | None:
        if o.status in ("confirmed", "preparing") and o.promised_at and o.promised_at + grace <= now:
            return f"ready_late: not ready at its promised time {rfc3339(o.promised_at)}"
        return None

    def delivery_late(o: Order) -> str | None:
        if o.status == "picked_up" and o.eta and o.eta + grace <= now:
            return f"delivery_late: not delivered at its estimated time {rfc3339(o.eta)}"
        return None

    rules["ready_late"] = (
        Order.status.in_(["confirmed", "preparing"]) & (Order.promised_at <= now - grace),
        ready_late,
    )
    rules["delivery_late"] = ((Order.status == "picked_up") & (Order.eta <= now - grace), delivery_late)
    return rules


def raise_delays(config: DispatchConfig, now: datetime) -> list[tuple[str, str]]:
    """Fire each due rule once per order: history row, ``order.delayed`` event, ``delays`` entry."""
    fired = []
    for rule, (coarse, check) in _rules(config, now).items():
        already = OrderAlert.select(OrderAlert.order).where(OrderAlert.rule == rule)
        for candidate in Order.select().where(coarse & Order.id.not_in(already)):
            if check(candidate) is None:
                continue
            try:
                with db.atomic():
                    order = locked(candidate.id)
                    reason = check(order)
                    if reason is None or OrderAlert.get_or_none(order=order.id, rule=rule):
                        continue  # changed, or fired by another tick, since the scan
                    OrderAlert.create(order=order.id, rule=rule, fired_at=now)
                    delays = {**(order.delays or {}), rule: rfc3339(now)}
                    bump(order, None, "order.delayed", reason=reason, delay=rule, now=now, delays=delays)
                    fired.append((order.id, rule))
            except peewee.IntegrityError:
                continue  # PostgreSQL: another relay inserted the same alert first
    return fired
