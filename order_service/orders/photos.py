"""The courier's delivery photo: stored beside the database, in ``<data_dir>/photos/``,
one file per order named by the order's id (never by anything the client sends), its
type and time on the order. Only the order's assigned agent uploads, while the order is
``picked_up``; a new upload replaces the photo. Admins and the order's customer read it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from order_service.errors import Conflict, Forbidden, InvalidField, NotFound
from order_service.orders import access, proof
from order_service.orders.service import bump, locked
from order_service.store.db import db
from order_service.store.models import Order, User, utcnow

_SAFE_ID = re.compile(r"[A-Za-z0-9_]{1,32}")


def photo_path(photos_dir: Path, order_id: str) -> Path:
    if not _SAFE_ID.fullmatch(order_id):
        raise NotFound("order", order_id)
    return photos_dir / order_id


def save_photo(user: User, order_id: str, data: bytes, photos_dir: Path) -> Order:
    """Check and store the photo; the order records it (history row, events, feed)."""
    kind = proof.photo_type(data)
    if len(data) > proof.PHOTO_MAX_BYTES:
        raise InvalidField("photo", f"at most {proof.PHOTO_MAX_BYTES} bytes")
    with db.atomic():
        order = locked(order_id)
        access.require_visible(user, order)
        if user.role != "agent" or order.agent_id != access.agent_id_of(user):
            raise Forbidden("only the order's courier adds its delivery photo", slug="not-the-courier")
        if order.status != "picked_up":
            raise Conflict(
                f"a delivery photo is taken while the order is picked up, not {order.status!r}",
                title="Not out for delivery",
                slug="not-picked-up",
            )
        if kind is None:
            raise InvalidField("photo", "not a JPEG, PNG or WebP image")
        _write(photo_path(photos_dir, order.id), data)
        now = utcnow()
        reason = "delivery photo replaced" if order.pod_photo_type else "delivery photo added"
        bump(order, user, "order.updated", reason=reason, now=now, pod_photo_type=kind, pod_photo_at=now)
        return order


def _write(target: Path, data: bytes) -> None:
    """Whole or not at all: a temporary file renamed over the old photo."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def readable_photo(user: User, order_id: str, photos_dir: Path) -> tuple[Path, str]:
    """The photo's file and type, for admins and the order's customer (anyone else: 404)."""
    order = Order.get_or_none(Order.id == order_id)
    if order is None or not (user.role == "admin" or (user.role == "customer" and order.owner_id == user.id)):
        raise NotFound("order", order_id)
    path = photo_path(photos_dir, order.id)
    if order.pod_photo_type is None or not path.exists():
        raise NotFound("photo", order_id)
    return path, order.pod_photo_type
