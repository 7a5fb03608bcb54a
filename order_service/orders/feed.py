"""A customer's feed: ``customers/<user id>/orders``, retained, one per customer.

Every change to an order a customer placed writes, in the change's own transaction, the
customer's whole current view: its active orders and those finished within
``contract.CUSTOMER_FEED_WINDOW_SECONDS``, the newest ``contract.CUSTOMER_FEED_LIMIT``.
A customer sees its orders' status, times, ETA, lines and address; of the courier only
the first name, and only while the order is out for delivery (``picked_up``); nothing of
dispatch (offers, delay alerts, agent ids). Its own ``delivery_code`` while the order is
active (``proof``: the courier asks for it at the door), and the order's ``proof``.

The feed's ``version`` is the sum of the versions of all the customer's orders: every
change bumps one order's version and a new order adds one, orders are never deleted,
and writers are serialised (the writer lock), so it increases with every message
without a counter of its own. A move of the courier alone changes no order: it adds one
to the order's ``order_location_seq``, which the sum counts too.

While an order is ``picked_up`` its courier carries ``location`` (``lat``, ``lon``,
``tst``, ``stale``; null when the courier shares none): that courier's only, and never
for another status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import peewee

import contract
from order_service import lifecycle
from order_service.orders.events import LINE_FIELDS, orders_with_lines
from order_service.store.db import Prepared, hold_writer_lock
from order_service.store.inserts import Insert, RowReader
from order_service.store.locations import AgentLocation, OrderLocationSeq
from order_service.store.models import (
    Agent,
    Order,
    OrderHistory,
    OrderItem,
    Outbox,
    rfc3339,
    tuple_rows,
    utcnow,
)

CUSTOMER_EVENT = "customer.orders"

# Dispatch's own events change nothing a customer sees: no feed message for them.
SILENT_EVENTS = frozenset({"order.offered", "order.offer_declined", "order.offer_expired", "order.delayed"})


# Every change of a customer's order runs these: their SQL is built once (db.Prepared).
_VERSIONS = Prepared(lambda: Order.select(peewee.fn.SUM(Order.version)).where(Order.owner == ""))
_MOVES = Prepared(
    lambda: OrderLocationSeq.select(peewee.fn.SUM(OrderLocationSeq.seq)).join(Order).where(Order.owner == "")
)


def _in_feed(select: peewee.ModelSelect[Order]) -> peewee.ModelSelect[Order]:
    """The orders of a customer's feed, newest first; parameters: the customer's id, the
    cutoff for finished orders, the limit."""
    return (
        select.where((Order.owner == "") & (Order.terminal_at.is_null() | (Order.terminal_at > utcnow())))
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(contract.CUSTOMER_FEED_LIMIT)
    )


_ORDER_FIELDS = Order._meta.sorted_fields
_FEED_ORDERS = Prepared(lambda: _in_feed(Order.select(*_ORDER_FIELDS)))
_FEED_LINES = Prepared(
    lambda: (
        OrderItem.select(*LINE_FIELDS)
        .where(OrderItem.order.in_(_in_feed(Order.select(Order.id))))
        .order_by(OrderItem.order, OrderItem.position)
    )
)
_READ_ORDER, _READ_LINE = RowReader(_ORDER_FIELDS), RowReader(LINE_FIELDS)


def feed_version(customer_id: str) -> int:
    ((total,),) = _VERSIONS.execute(customer_id)
    ((moves,),) = _MOVES.execute(customer_id)
    return int(total or 0) + int(moves or 0)


def customer_orders(customer_id: str, now: datetime | None = None) -> list[dict]:
    """The orders of the customer's feed, newest first, as the customer sees them."""
    cutoff = (now or utcnow()) - timedelta(seconds=contract.CUSTOMER_FEED_WINDOW_SECONDS)
    feed = (customer_id, Order.terminal_at.db_value(cutoff), contract.CUSTOMER_FEED_LIMIT)
    rows = [_READ_ORDER(row) for row in _FEED_ORDERS.execute(*feed)]
    if not rows:
        return []
    codes = {row["id"]: row["delivery_code"] for row in rows}
    lines = [_READ_LINE(row).values() for row in _FEED_LINES.execute(*feed)]
    orders = orders_with_lines(rows, lines)
    carrying = {o["agent_id"] for o in orders if o["status"] == "picked_up" and o["agent_id"]}
    couriers, positions = _first_names(carrying), _positions(carrying)
    reasons = _reasons([o["id"] for o in orders if o["status"] in lifecycle.TERMINAL])
    return [
        {
            "id": o["id"],
            "number": o.get("number"),
            "status": o["status"],
            "status_times": o["status_times"],
            "eta": o["eta"],
            "total_cents": o["total_cents"],
            "currency": o["currency"],
            "items": o["items"],
            "customer_address": o["customer"]["address"],
            "courier": (
                _courier(couriers.get(o["agent_id"]), positions.get(o["agent_id"]))
                if o["status"] == "picked_up"
                else None
            ),
            "failure": o["failure"],
            "reason": reasons.get(o["id"]),
            "delivery_code": codes.get(o["id"]) if o["status"] not in lifecycle.TERMINAL else None,
            "proof": o["proof"],
        }
        for o in orders
    ]


def _courier(first_name: str | None, location: dict | None) -> dict | None:
    return {"first_name": first_name, "location": location} if first_name else None


def _positions(agent_ids: set[str]) -> dict[str, dict]:
    if not agent_ids:
        return {}
    rows = AgentLocation.select().where(AgentLocation.agent.in_(sorted(agent_ids)))
    return {r.agent_id: {"lat": r.lat, "lon": r.lon, "tst": r.tst, "stale": bool(r.stale)} for r in rows}


def _first_names(agent_ids: set[str]) -> dict[str, str]:
    if not agent_ids:
        return {}
    rows = tuple_rows(Agent.select(Agent.id, Agent.name).where(Agent.id.in_(sorted(agent_ids))))
    return {agent_id: name.split()[0] for agent_id, name in rows if name.split()}


def _reasons(order_ids: list[str]) -> dict[str, str]:
    """The reason given with each finished order's last move (cancelled, rejected, failed)."""
    if not order_ids:
        return {}
    rows = tuple_rows(
        OrderHistory.select(OrderHistory.order, OrderHistory.reason)
        .where(OrderHistory.order.in_(order_ids) & OrderHistory.to_status.in_(sorted(lifecycle.TERMINAL)))
        .order_by(OrderHistory.order, OrderHistory.version)
    )
    return {order_id: reason for order_id, reason in rows if reason}


def customer_feed(customer_id: str, now: datetime | None = None) -> dict:
    """The payload of ``customers/<customer_id>/orders`` as of now."""
    now = now or utcnow()
    return {
        **contract.envelope(CUSTOMER_EVENT, rfc3339(now)),
        "version": feed_version(customer_id),
        "customer_id": customer_id,
        "updated_at": rfc3339(now),
        "orders": customer_orders(customer_id, now),
    }


def record_location_feed(order: Order) -> None:
    """The courier carrying ``order`` moved (or went stale or offline): count it in the
    feed's version and write the customer's feed, inside the caller's transaction."""
    if not order.owner_id:
        return
    hold_writer_lock()
    bumped = (
        OrderLocationSeq.update(seq=OrderLocationSeq.seq + 1)
        .where(OrderLocationSeq.order == order.id)
        .execute()
    )
    if not bumped:
        OrderLocationSeq.insert(order=order.id, seq=1).execute()
    record_customer_feed(order, "order.location")


def record_customer_feed(order: Order, event: str) -> None:
    """Write the outbox row of the feed of the customer who placed ``order`` (if one did),
    inside the caller's transaction, after the change is saved."""
    customer_id = order.owner_id
    if not customer_id or event in SILENT_EVENTS:
        return
    hold_writer_lock()  # outbox id order = commit order; the version's sum reads committed rows
    payload = customer_feed(customer_id)
    _INSERT_FEED.rows(
        [
            {
                "event_id": payload["event_id"],
                "event": CUSTOMER_EVENT,
                "kind": "customer",
                "topic": contract.customer_orders(customer_id),
                "payload": contract.dumps(payload),
                "order_id": order.id,
            }
        ]
    )


_INSERT_FEED = Insert(Outbox, ("event_id", "event", "kind", "topic", "payload", "order_id"))
