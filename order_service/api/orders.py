"""/orders: create, list, read, history, status, assignment."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime

from flask import Response, current_app, jsonify
from peewee import Tuple, prefetch

from order_service import faults
from order_service.api import location_schemas, schemas
from order_service.api.common import BEARER, blueprint, idempotency_key, if_match
from order_service.api.problems import field_problem
from order_service.api.security import current_user, require
from order_service.config import Settings
from order_service.dispatch import location, offers
from order_service.dispatch import settings as dispatch_config
from order_service.errors import Forbidden, NotFound
from order_service.lifecycle import STATUSES
from order_service.orders import access
from order_service.orders import service as orders
from order_service.orders.events import order_dict, published_body
from order_service.store.models import Order, OrderHistory, OrderItem, User, rfc3339

bp = blueprint("orders", "Orders and their lifecycle")


def _body(order: Order, user: User | None = None) -> dict:
    """The order as its reader (this request's user) sees it: its own customer also sees its
    delivery code."""
    body = order_dict(order)
    user = user or current_user()
    if user.role == "customer" and order.owner_id == user.id:
        body["delivery_code"] = order.delivery_code
    return body


def order_text(order: Order, user: User) -> str:
    """The order's JSON text for ``user``: as this request just published it (encoded once, for
    the bus and for the answer) when it has not changed since, and with its delivery code for
    its own customer."""
    text = published_body(order)
    if text is None:
        return json.dumps(_body(order, user), ensure_ascii=False)  # as jsonify encodes it
    if user.role == "customer" and order.owner_id == user.id:
        text = f"{text[:-1]},{json.dumps('delivery_code')}:{json.dumps(order.delivery_code)}}}"
    return text


def _order_response(order: Order, status: int = 200) -> Response:
    text = order_text(order, current_user())
    response = current_app.response_class(text + "\n", mimetype="application/json")
    response.status_code = status
    response.headers["ETag"] = f'"{order.version}"'
    return response


def place_order(
    settings: Settings, user: User, body: schemas.OrderCreate, key: str | None
) -> tuple[Order, bool]:
    """Place ``body`` as ``user`` (a customer or an admin): the order and whether it is new
    (False: the Idempotency-Key's retry). Shared by the view and the API's fast path."""
    new = orders.NewOrder(
        customer=body.customer.model_dump(),
        items=[item.model_dump(exclude_none=True) for item in body.items],
        currency=body.currency if "currency" in body.model_fields_set else settings.currency,
        notes=body.notes,
        delivery_location=body.delivery_location.model_dump() if body.delivery_location else None,
    )
    business = orders.Business(settings.currency, settings.business_zone)
    return orders.create_order(user, new, key, business)


@bp.post("/orders", responses={201: schemas.OrderOut}, security=BEARER)
@require("customer", "admin")
def create_order(body: schemas.OrderCreate, header: schemas.IdempotencyHeader) -> Response:
    """Place an order. Honours Idempotency-Key: a retry returns the original order.

    Lines are catalog items, ``{"item_id", "quantity", "option_ids"}``: the server prices
    them (item price plus the options' deltas) and keeps a snapshot of name, unit price
    and options' names on the order. Only admins may add custom lines
    ``{"name", "quantity", "unit_price_cents"}``; a customer's price is a 422. An unknown
    item or option is a 422, a sold-out item a 409, each naming the line's field; nothing
    is written then. The order gets ``number``, sequential per business day."""
    settings = current_app.config["ORDERBUS"]
    order, created = place_order(settings, current_user(), body, idempotency_key(header.idempotency_key))
    response = _order_response(order, 201)
    response.headers["Location"] = f"/api/v1/orders/{order.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        faults.kill_point("api.after_commit")  # committed; the client never hears of it
    return response


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, order_id = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
        return datetime.fromisoformat(created), str(order_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise field_problem("cursor", "not a cursor this API returned") from None


def _encode_cursor(order: Order) -> str:
    raw = json.dumps([order.created_at.isoformat(), order.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@bp.get("/orders", responses={200: schemas.OrderList}, security=BEARER)
@require()
def list_orders(query: schemas.OrderListQuery) -> Response:
    """Newest first. Admins see all orders, customers their own, agents their assigned ones."""
    select = access.visible_orders(current_user())
    if query.status:
        wanted = [s.strip(" ") for s in query.status.split(",") if s.strip(" ")]
        if not wanted:
            raise field_problem("status", "name at least one status")
        unknown = [s for s in wanted if s not in STATUSES]
        if unknown:
            raise field_problem("status", f"unknown status {unknown[0]!r}; one of {list(STATUSES)}")
        select = select.where(Order.status.in_(wanted))
    if query.agent_id:
        select = select.where(Order.agent == query.agent_id)
    if query.q:
        q = query.q.strip()
        found = (Order.id == q) | Order.customer_name.contains(q) | Order.customer_phone.contains(q)
        if re.fullmatch(r"#?[0-9]{1,9}", q):  # an order's number, as shown: #12
            found |= Order.number == int(q.lstrip("#"))
        select = select.where(found)
    if query.cursor:
        created, order_id = _decode_cursor(query.cursor)
        select = select.where(Tuple(Order.created_at, Order.id) < Tuple(created, order_id))
    page = list(
        prefetch(
            select.order_by(Order.created_at.desc(), Order.id.desc()).limit(query.limit + 1),
            OrderItem.select(),
        )
    )
    more = len(page) > query.limit
    page = page[: query.limit]
    return jsonify(
        orders=[_body(o) for o in page],
        next_cursor=_encode_cursor(page[-1]) if more else None,
    )


def _visible(order_id: str) -> Order:
    order = Order.get_or_none(Order.id == order_id)
    if order is None:
        raise NotFound("order", order_id)
    access.require_visible(current_user(), order)
    return order


@bp.get("/orders/<order_id>", responses={200: schemas.OrderOut}, security=BEARER)
@require()
def get_order(path: schemas.OrderPath) -> Response:
    """One order (admin, its customer, its agent). The ETag is its version."""
    return _order_response(_visible(path.order_id))


TRAIL_LIMIT = 500


@bp.get("/orders/<order_id>/trail", responses={200: location_schemas.TrailOut}, security=BEARER)
@require("admin", "customer")
def get_trail(path: schemas.OrderPath) -> Response:
    """Where the courier went while carrying the order (``picked_up``): the newest 500
    positions, oldest first. Admins; the order's customer only while it is ``picked_up``
    (403 before and after: the courier's position is not shown then)."""
    order = _visible(path.order_id)
    if current_user().role == "customer" and order.status != "picked_up":
        raise Forbidden(
            "the courier's route is shown only while the order is out for delivery (picked_up)",
            slug="not-out-for-delivery",
        )
    return jsonify(order_id=order.id, points=location.trail(order.id, TRAIL_LIMIT))


@bp.get("/orders/<order_id>/history", responses={200: schemas.HistoryOut}, security=BEARER)
@require()
def get_history(path: schemas.OrderPath) -> Response:
    """Every change of the order: who, when, from, to, reason."""
    order = _visible(path.order_id)
    rows = OrderHistory.select().where(OrderHistory.order == order).order_by(OrderHistory.version)
    return jsonify(
        order_id=order.id,
        history=[
            {
                "version": h.version,
                "event": h.event,
                "at": rfc3339(h.at),
                "actor": h.actor_id,
                "actor_role": h.actor_role,
                "from_status": h.from_status,
                "to_status": h.to_status,
                "from_agent": h.from_agent,
                "to_agent": h.to_agent,
                "reason": h.reason,
            }
            for h in rows
        ],
    )


@bp.patch("/orders/<order_id>/status", responses={200: schemas.OrderOut}, security=BEARER)
@require()
def change_status(
    path: schemas.OrderPath, body: schemas.StatusChange, header: schemas.IfMatchHeader
) -> Response:
    """Move the order along its lifecycle; 409 lists the allowed next states."""
    settings = current_app.config["ORDERBUS"]
    order = move_order(settings, current_user(), path.order_id, body, if_match(header.if_match))
    return _order_response(order)


def move_order(
    settings: Settings, user: User, order_id: str, body: schemas.StatusChange, version: int | None
) -> Order:
    """Apply ``body`` to the order as ``user``, expecting ``version`` (If-Match) when given.
    Shared by the view and the API's fast path."""
    return orders.change_status(
        user,
        order_id,
        body.status,
        reason=body.reason,
        force=body.force,
        if_match=version,
        config=dispatch_config.current(settings),
        prep_minutes=body.prep_minutes,
        failure=(body.failure.reason, body.failure.note) if body.failure else None,
        code=body.code,
    )


@bp.put("/orders/<order_id>/agent", responses={200: schemas.OrderOut}, security=BEARER)
@require("admin")
def assign_agent(
    path: schemas.OrderPath, body: schemas.AgentAssign, header: schemas.IfMatchHeader
) -> Response:
    """Assign or reassign a delivery agent (order confirmed, preparing or ready).

    With ``"offer": true`` (or the offer_required setting on and no ``offer`` given) the
    order is offered to the agent instead, who must accept it (POST .../offer/accept)."""
    config = dispatch_config.current(current_app.config["ORDERBUS"])
    if body.offer or (body.offer is None and config.offer_required):
        order = offers.offer(
            current_user(),
            path.order_id,
            [body.agent_id],
            seconds=config.offer_seconds,
            reason=body.reason,
            if_match=if_match(header.if_match),
            field="agent_id",
        )
        return _order_response(order)
    order = orders.assign(
        current_user(), path.order_id, body.agent_id, reason=body.reason, if_match=if_match(header.if_match)
    )
    return _order_response(order)


@bp.delete("/orders/<order_id>/agent", responses={200: schemas.OrderOut}, security=BEARER)
@require("admin")
def unassign_agent(path: schemas.OrderPath, header: schemas.IfMatchHeader) -> Response:
    """Take the order off its agent's worklist."""
    order = orders.unassign(current_user(), path.order_id, if_match=if_match(header.if_match))
    return _order_response(order)
