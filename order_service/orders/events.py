"""Payloads of the order bus and the outbox rows that carry them.

Every change to an order writes its events here, inside the caller's
transaction, so an event exists if and only if the change committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, cast, get_args

import peewee

import contract
from order_service.errors import Conflict
from order_service.orders import worklists
from order_service.orders.proof import proof_dict
from order_service.store.db import hold_writer_lock, is_sqlite
from order_service.store.inserts import Insert
from order_service.store.models import (
    Agent,
    Order,
    OrderItem,
    Outbox,
    dict_rows,
    rfc3339,
    tuple_rows,
    utcnow,
)

SCHEMA = contract.SCHEMA

OrderEvent = Literal[
    "order.created",
    "order.status_changed",
    "order.assigned",
    "order.unassigned",
    "order.updated",
    # Dispatch (issue #7).
    "order.offered",
    "order.offer_declined",
    "order.offer_expired",
    "order.delayed",
]
ORDER_EVENTS: tuple[str, ...] = get_args(OrderEvent)


def item_out(
    name: str, quantity: int, unit_price_cents: int, item_id: str | None, options: list | None
) -> dict:
    """An order line as published: a catalog line also names its item and its options."""
    line = {"name": name, "quantity": quantity, "unit_price_cents": unit_price_cents}
    if item_id is not None:
        line["item_id"] = item_id
        line["options"] = list(options or [])
    return line


def order_dict(order: Order, items: list[dict] | None = None) -> dict:
    """The order as published; ``items`` (already in position order) saves a query when known."""
    if items is None:
        items = [
            item_out(i.name, i.quantity, i.unit_price_cents, i.item_id, i.options)
            for i in sorted(order.items, key=lambda i: i.position)
        ]
    return {
        "id": order.id,
        "number": order.number,
        "version": order.version,
        "status": order.status,
        "agent_id": order.agent_id,
        "customer": {
            "name": order.customer_name,
            "phone": order.customer_phone,
            "address": order.customer_address,
        },
        "items": items,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "notes": order.notes,
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
        "status_times": order.status_times,
        "eta": rfc3339(order.eta),
        **dispatch_fields(order),
        "proof": proof_dict(order),
    }


def dispatch_fields(order: Order) -> dict:
    """The order's dispatch state: promised ready time, destination, pending offer, failure, alerts."""
    offer = None
    if order.offer_agents:
        offer = {
            "agent_ids": list(order.offer_agents),
            "offered_at": rfc3339(order.offered_at),
            "expires_at": rfc3339(order.offer_expires_at),
        }
    location = None
    if order.delivery_lat is not None and order.delivery_lon is not None:
        location = {"lat": order.delivery_lat, "lon": order.delivery_lon}
    failure = {"reason": order.failure_reason, "note": order.failure_note} if order.failure_reason else None
    return {
        "promised_at": rfc3339(order.promised_at),
        "delivery_location": location,
        "offer": offer,
        "failure": failure,
        "delays": dict(order.delays or {}),
    }


def _order_dicts(query: peewee.ModelSelect[Order]) -> list[dict]:
    """``order_dict`` of every order of a query, in its order: two queries (the orders, then
    all their items), not one more per order as ``order.items`` would make."""
    orders = list(dict_rows(query))
    if not orders:
        return []
    lines = tuple_rows(
        OrderItem.select(*LINE_FIELDS)
        .where(OrderItem.order.in_(query.select(Order.id).order_by()))
        .order_by(OrderItem.order, OrderItem.position)
    )
    return orders_with_lines(orders, lines)


# An order line as orders_with_lines reads it.
LINE_FIELDS = (
    OrderItem.order,
    OrderItem.name,
    OrderItem.quantity,
    OrderItem.unit_price_cents,
    OrderItem.item_id,
    OrderItem.options,
)


def orders_with_lines(orders: list[dict], lines: Iterable[Iterable[Any]]) -> list[dict]:
    """``order_dict`` of each order, given as a dict of its fields' values, with its lines:
    ``LINE_FIELDS``' values, in position order."""
    # Plain rows, not models: a worklist may hold many orders, and building a model per row
    # was most of the cost of a worklist (order_dict reads attributes only).
    found = [SimpleNamespace(**row, agent_id=row["agent"]) for row in orders]
    items: dict[str, list[dict]] = {o.id: [] for o in found}
    for order_id, name, quantity, price, item_id, options in lines:
        items[order_id].append(item_out(name, quantity, price, item_id, options))
    return [order_dict(cast(Order, o), items[o.id]) for o in found]


def _envelope(event: str) -> dict:
    return contract.envelope(event, rfc3339(utcnow()))


def record_order_event(order: Order, event: str, *, reason: str = "", delay: str | None = None) -> dict:
    """Write the outbox rows for one order event; ``orders/new`` too on creation.

    ``reason`` (the history row's reason) and ``delay`` (the rule of an
    ``order.delayed`` event) are added to the envelope when given.
    """
    draft = draft_order_event(order, event, reason=reason, delay=delay)
    write_order_event(order, draft)
    return draft.payload


@dataclass
class EventDraft:
    """An order event's outbox rows and its order's JSON text, made before they are written."""

    payload: dict
    rows: list[dict]
    body_text: str

    def numbered(self, number: int) -> None:
        """The order's number, known only in its transaction, put where the draft held
        :data:`NUMBER_SLOT` (the first ``"number":`` of each text is the order's own: the
        envelope before it holds no text of a user's)."""
        slot, given = f'"number":{NUMBER_SLOT}', f'"number":{number}'
        if slot not in self.body_text:  # order_dict without its number: nothing to put it in
            raise ValueError("the drafted order has no number to fill in")
        self.body_text = self.body_text.replace(slot, given, 1)
        for row in self.rows:
            row["payload"] = row["payload"].replace(slot, given, 1)
        self.payload["order"]["number"] = number


#: A new order's number in its event's draft, until its transaction gives it one.
NUMBER_SLOT = -918_273_645


def draft_order_event(order: Order, event: str, *, reason: str = "", delay: str | None = None) -> EventDraft:
    """The outbox rows of :func:`record_order_event`, without the database."""
    assert event in ORDER_EVENTS, event
    envelope = _envelope(event)
    body = order_dict(order)
    extra = {}
    if reason:
        extra["reason"] = reason
    if delay:
        extra["delay"] = delay
    payload = {**envelope, "order": body, **extra}
    # The order is serialised once: its text goes into the payload (exactly as dumps(payload)
    # would write it) and is kept for the response (published_body).
    body_text = contract.dumps(body)
    text = contract.dumps(envelope)[:-1] + ',"order":' + body_text
    text += "," + contract.dumps(extra)[1:] if extra else "}"
    kinds = [("status", contract.order_status(order.id))]
    if event == "order.created":
        kinds.insert(0, ("new", contract.ORDERS_NEW))
    rows = [
        {
            "event_id": payload["event_id"],
            "event": event,
            "kind": kind,
            "topic": topic,
            "payload": text,
            "order_id": order.id,
            "agent_id": order.agent_id,
        }
        for kind, topic in kinds
    ]
    return EventDraft(payload, rows, body_text)


def write_order_event(order: Order, draft: EventDraft) -> None:
    """Write a drafted event's outbox rows (in the order's transaction)."""
    setattr(order, _PUBLISHED, (order.version, draft.body_text))
    hold_writer_lock()  # outbox id order = commit order (see db.py)
    if is_sqlite():  # SQLite numbers a statement's rows in their order: one statement
        _INSERT_OUTBOX.rows(draft.rows)
    else:  # PostgreSQL does not promise it for one statement: one each (sent together)
        for row in draft.rows:
            _INSERT_OUTBOX.rows([row])


_PUBLISHED = "_orderbus_published"


def published_body(order: Order) -> str | None:
    """The JSON text of ``order_dict(order)`` as this process just published it, if the order
    has not changed since: the response reuses it instead of building and encoding it again."""
    published = getattr(order, _PUBLISHED, None)
    if published is None or published[0] != order.version:
        return None
    return published[1]


# Every order event writes these rows: their SQL is built once (inserts.py).
_INSERT_OUTBOX = Insert(Outbox, ("event_id", "event", "kind", "topic", "payload", "order_id", "agent_id"))


# How large a worklist payload may be: both brokers refuse a packet over 1 MiB
# (mosquitto.conf's message_size_limit and max_packet_size, the embedded broker's
# max_packet_bytes). A bigger worklist could never be published, and the relay would
# offer it to the broker again and again, ahead of every later row. A change that adds an
# order to a worklist stops 8 KiB short of the limit; the rest is room for the orders
# already in it to change (each status adds its time), up to the limit less what the
# topic and the packet's header take.
MAX_WORKLIST_BYTES = 1_048_576 - 8_192
HARD_WORKLIST_BYTES = 1_048_576 - 1_024


def record_worklists(agent_ids: Iterable[str | None], order: Order | None = None) -> None:
    """Bump and publish the complete worklist of each agent named (once each).

    ``orders`` are the agent's non-terminal orders; ``offers`` the orders offered to
    it that wait for its answer (accept or decline over REST). ``order`` is the order
    whose change touches these worklists: only its place in each is updated
    (``worklists``), so the cost does not grow with the worklist's length. Without it,
    or when the kept text is not the current version's, the worklist is rebuilt.

    A change that would add an order to a worklist larger than :data:`MAX_WORKLIST_BYTES`,
    or make any worklist larger than :data:`HARD_WORKLIST_BYTES`, is refused (``Conflict``,
    nothing written): the brokers could not carry it. Taking an order out never is."""
    agents = sorted({a for a in agent_ids if a})
    if agents:
        hold_writer_lock()  # outbox id order = commit order (see db.py)
    fragment: str | None = None
    offered: set[str] = set()
    if order is not None and agents:
        fragment = contract.dumps(order_dict(order))
        offered = worklists.pending_offers(order.id)
    for agent_id in agents:
        Agent.update(worklist_version=Agent.worklist_version + 1).where(Agent.id == agent_id).execute()
        version = Agent.select(Agent.worklist_version).where(Agent.id == agent_id).scalar()
        kept = worklists.load(agent_id, version - 1) if fragment is not None else None
        if order is None or kept is None or fragment is None:
            kept = worklists.rebuild(agent_id, _order_dicts)
            added = order is not None and worklists.holds(kept, order)  # (not known: as if added)
        else:
            added = worklists.place(kept, agent_id, order, offered, fragment)
        envelope = _envelope("agent.worklist")
        head = contract.dumps({**envelope, "agent_id": agent_id, "version": version})
        text = f'{head[:-1]},"orders":{kept.orders.json()},"offers":{kept.offers.json()}}}'
        size = len(text.encode())
        holding = order is not None and worklists.holds(kept, order)
        limit = MAX_WORKLIST_BYTES if added else HARD_WORKLIST_BYTES
        if holding and size > limit:
            raise Conflict(
                f"agent {agent_id}'s worklist would be {size} bytes, over the {limit} it may be to "
                f"fit in one message ({len(kept.orders)} orders, {len(kept.offers)} offers)",
                title="Worklist full",
                slug="worklist-full",
                agent_id=agent_id,
                limit_bytes=limit,
            )
        kept.save(agent_id, version)
        Outbox.create(
            event_id=envelope["event_id"],
            event="agent.worklist",
            kind="worklist",
            topic=contract.agent_assigned(agent_id),
            payload=text,
            agent_id=agent_id,
        )


def order_dicts(query: peewee.ModelSelect[Order]) -> list[dict]:
    """``order_dict`` of every order of a query, in its order, in two queries."""
    return _order_dicts(query)
