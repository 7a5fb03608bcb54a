"""Proof of delivery: the customer's 4-digit code and the courier's photo (issue 19, item 5).

Each order a customer places gets a random ``delivery_code`` at creation, shown to that
customer only (its REST body and its feed), never to agents, dashboards or ``orders/#``.
The business settings ``pod_code`` and ``pod_photo`` (``off``/``optional``/``required``,
in the dispatch settings) say what the move to ``delivered`` asks of a courier:

* a code, when given and the setting is not ``off``, must be the order's: a wrong one is
  refused (422 naming ``code``), counted (one ``pod_code_refusals`` row, the
  ``orderbus_pod_code_refused_total`` metric) and the order stays ``picked_up``; after
  :data:`CODE_ATTEMPTS` wrong codes the order takes no more (the dispatcher delivers it);
* ``required`` refuses the move without it (the code: 422 naming ``code``; the photo: 422
  naming ``photo``). An admin (the dispatcher, say on the phone with the customer) is not
  held to ``required``. An order without a customer login (a phone order) has no code.

Photos are checked here by their first bytes (``photo_type``); ``photos`` stores them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from order_service.errors import Forbidden, InvalidField
from order_service.orders import access
from order_service.store.db import db
from order_service.store.models import Order, PodCodeRefusal, User, rfc3339

CODE_ATTEMPTS = 5
PHOTO_MAX_BYTES = 5 * 1024 * 1024
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")


class WrongCode(InvalidField):
    """The code given is not the order's."""

    def __init__(self) -> None:
        super().__init__("code", "this is not the customer's delivery code; ask the customer again")


def new_code() -> str:
    return f"{secrets.randbelow(10000):04d}"


def proof_dict(order: Any) -> dict:
    """The order body's ``proof`` (every reader may see it: no code, no file)."""
    return {
        "code_checked": bool(order.pod_code_checked),
        "photo": order.pod_photo_type is not None,
        "at": rfc3339(order.pod_at or order.pod_photo_at),
    }


def refusals(order_id: str) -> int:
    return PodCodeRefusal.select().where(PodCodeRefusal.order == order_id).count()


def on_delivery(order: Order, user: User, code: str | None, config: object, now: datetime) -> dict:
    """The order fields of its move to ``delivered``, or the refusal (inside the move's
    transaction: a refusal writes nothing there). ``config`` is the business's
    ``dispatch.settings.DispatchConfig`` (its ``pod_code`` and ``pod_photo``)."""
    asked = getattr(config, "pod_code", "off") if order.delivery_code else "off"
    photo = getattr(config, "pod_photo", "off")
    checked = False
    if code is not None and asked != "off":
        if refusals(order.id) >= CODE_ATTEMPTS:
            raise Forbidden(
                f"{CODE_ATTEMPTS} wrong codes were given for this order: the dispatcher must confirm it",
                slug="code-attempts-exhausted",
            )
        if not hmac.compare_digest(code.encode(), (order.delivery_code or "").encode()):
            raise WrongCode()
        checked = True
    trusted = user.role == "admin"
    if asked == "required" and not checked and not trusted:
        raise InvalidField("code", "the customer's 4-digit delivery code is required")
    if photo == "required" and order.pod_photo_type is None and not trusted:
        raise InvalidField("photo", "a photo of the delivery is required: take it before Delivered")
    return {"pod_code_checked": checked, "pod_at": now}


@contextmanager
def counting_wrong_codes(order_id: str, user: User, target: str, code: str | None) -> Iterator[None]:
    """Around a move's transaction: count a wrong code, in a transaction of its own once
    the move's is rolled back."""
    if code is not None and target != "delivered":
        raise InvalidField("code", "only with status delivered")
    try:
        yield
    except WrongCode:
        with db.atomic():
            PodCodeRefusal.create(order=order_id, agent_id=access.agent_id_of(user))
        raise


# First bytes of the accepted image types (the client's Content-Type is not trusted).
def photo_type(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
