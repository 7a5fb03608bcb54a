"""A new order, made before the writers' turn and written in it.

Writers take turns (``store/db.py``), so what a turn holds bounds how many orders a second
one database takes. :func:`draft_order` makes everything of a new order that needs no turn:
its lines priced (the prices it is written with), its values, its rows' parameters and its
event's JSON; :func:`write_order`, in the order's transaction, takes the day's next number,
puts it in and writes the rows (``service.create_order`` runs both).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from order_service.catalog.pricing import price_lines
from order_service.errors import InvalidField
from order_service.orders import numbers, proof
from order_service.orders.events import NUMBER_SLOT, EventDraft, draft_order_event, write_order_event
from order_service.orders.feed import record_customer_feed
from order_service.store.inserts import Insert
from order_service.store.models import Order, OrderHistory, OrderItem, User, new_id, rfc3339, utcnow


@dataclass(frozen=True)
class NewOrder:
    customer: dict[str, str]
    items: list[dict[str, Any]]
    currency: str = "EUR"
    notes: str = ""
    delivery_location: dict[str, float] | None = None

    def fingerprint(self) -> str:
        body: dict[str, Any] = {
            "customer": self.customer,
            "items": self.items,
            "currency": self.currency,
            "notes": self.notes,
        }
        if self.delivery_location is not None:  # absent: the same fingerprint as before it existed
            body["delivery_location"] = self.delivery_location
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Business:
    """What an order takes from the business: the catalog's currency, and the time zone
    whose calendar day numbers orders (ORDERBUS_CURRENCY, ORDERBUS_BUSINESS_TIMEZONE)."""

    currency: str = "EUR"
    zone: ZoneInfo = ZoneInfo("UTC")


DEFAULT_BUSINESS = Business()


_ORDER_FIELDS = (  # the columns of a new order
    "id version status owner customer_name customer_phone customer_address notes currency delivery_lat "
    "delivery_lon total_cents status_times created_at updated_at number business_day delivery_code"
).split()
_INSERT_ORDER = Insert(Order, _ORDER_FIELDS)
_ORDER_NUMBER_AT = [f.name for f in _INSERT_ORDER.fields].index("number")  # its place in a row's parameters
_INSERT_ITEMS = Insert(
    OrderItem, ("order", "position", "name", "quantity", "unit_price_cents", "item_id", "options")
)
_INSERT_HISTORY = Insert(
    OrderHistory, ("order", "version", "event", "at", "actor", "actor_role", "to_status")
)


@dataclass
class OrderDraft:
    """A new order made without the database, all but its number: the rows and the event."""

    order: Order
    day: str
    order_params: list[Any]
    item_count: int
    item_params: list[Any]
    history_params: list[Any]
    event: EventDraft


def draft_order(user: User, new: NewOrder, business: Business) -> OrderDraft:
    """The order, its lines (priced now: the prices it is written with), its history row and
    its event, as :func:`write_order` writes them once the transaction gives the number."""
    lines = price_lines(new.items, custom_allowed=user.role == "admin")
    if new.currency != business.currency and any(line["item_id"] for line in lines):
        raise InvalidField("currency", f"the catalog's prices are in {business.currency}")
    now = utcnow()
    total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
    location = new.delivery_location
    values: dict[str, Any] = {
        "id": new_id("ord"),
        "version": 1,
        "status": "placed",
        "owner": user.id if user.role == "customer" else None,
        "customer_name": new.customer["name"],
        "customer_phone": new.customer["phone"],
        "customer_address": new.customer["address"],
        "notes": new.notes,
        "currency": new.currency,
        "delivery_lat": location["lat"] if location else None,
        "delivery_lon": location["lon"] if location else None,
        "total_cents": total,
        "status_times": {"placed": rfc3339(now)},
        "created_at": now,
        "updated_at": now,
        "number": NUMBER_SLOT,
        "business_day": numbers.business_day(now, business.zone),
        "delivery_code": proof.new_code() if user.role == "customer" else None,
    }
    (order,), order_params = _INSERT_ORDER.prepare([values])
    # The order keeps its lines in memory: what order_dict reads (as prefetch() would leave it).
    items, item_params = _INSERT_ITEMS.prepare(
        [{"order": values["id"], "position": i, **line} for i, line in enumerate(lines)]
    )
    order.items = items
    _, history_params = _INSERT_HISTORY.prepare(
        [
            {
                "order": values["id"],
                "version": 1,
                "event": "order.created",
                "at": now,
                "actor": user.id,
                "actor_role": user.role,
                "to_status": "placed",
            }
        ]
    )
    return OrderDraft(
        order,
        values["business_day"],
        order_params,
        len(items),
        item_params,
        history_params,
        draft_order_event(order, "order.created"),
    )


def write_order(draft: OrderDraft) -> Order:
    """Four statements (the number, the order, its items, its history row) and the event's
    outbox rows, with SQL built once; in the order's transaction."""
    order = draft.order
    number = numbers.next_number(draft.day)
    order.__data__["number"] = number
    draft.order_params[_ORDER_NUMBER_AT] = number
    draft.event.numbered(number)
    _INSERT_ORDER.write(1, draft.order_params)
    _INSERT_ITEMS.write(draft.item_count, draft.item_params)
    _INSERT_HISTORY.write(1, draft.history_params)
    write_order_event(order, draft.event)
    record_customer_feed(order, "order.created")
    return order
