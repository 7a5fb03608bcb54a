"""Proof of delivery over REST: the courier's photo (upload, read) and the settings a
courier app or the shop needs to know what a delivery asks (orders/proof.py)."""

from __future__ import annotations

from typing import Literal

from flask import Response, current_app, jsonify, request, send_file
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from order_service.api import schemas
from order_service.api.common import BEARER, RAW_BODY_ENDPOINTS, blueprint
from order_service.api.security import current_user, require
from order_service.dispatch import settings as dispatch_config
from order_service.orders import photos, proof
from order_service.orders.events import order_dict

bp = blueprint("proof", "Proof of delivery: the delivery code's settings and the courier's photo")
PHOTO_RESPONSE = {
    "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in proof.PHOTO_TYPES}
}


class ProofSettingsOut(BaseModel):
    pod_code: Literal["off", "optional", "required"]
    pod_photo: Literal["off", "optional", "required"]
    photo_max_bytes: int


def _photos_dir():
    return current_app.config["ORDERBUS"].data_dir / "photos"


@bp.get("/settings/proof", responses={200: ProofSettingsOut}, security=BEARER)
@require()
def get_proof_settings() -> Response:
    """What the move to ``delivered`` asks: ``pod_code`` and ``pod_photo``, each
    ``off``/``optional``/``required`` (admins change them with PATCH /settings/dispatch)."""
    config = dispatch_config.current(current_app.config["ORDERBUS"])
    return jsonify(
        pod_code=config.pod_code, pod_photo=config.pod_photo, photo_max_bytes=proof.PHOTO_MAX_BYTES
    )


@bp.post("/orders/<order_id>/photo", responses={200: schemas.OrderOut}, security=BEARER)
@require("agent")
def upload_photo(path: schemas.OrderPath) -> Response:
    """The delivery photo, as the raw body (JPEG, PNG or WebP, told by its first bytes, not
    by Content-Type; at most 5 MiB, else 413). Only the order's courier, while the order is
    ``picked_up``; a new photo replaces the old. Answers the order (its ``proof.photo``)."""
    request.max_content_length = proof.PHOTO_MAX_BYTES
    if request.content_length is not None and request.content_length > proof.PHOTO_MAX_BYTES:
        raise RequestEntityTooLarge(f"a photo is at most {proof.PHOTO_MAX_BYTES} bytes (5 MiB)")
    data = request.stream.read(proof.PHOTO_MAX_BYTES + 1)
    if len(data) > proof.PHOTO_MAX_BYTES:
        raise RequestEntityTooLarge(f"a photo is at most {proof.PHOTO_MAX_BYTES} bytes (5 MiB)")
    order = photos.save_photo(current_user(), path.order_id, data, _photos_dir())
    response = jsonify(order_dict(order))
    response.headers["ETag"] = f'"{order.version}"'
    return response


RAW_BODY_ENDPOINTS.add("proof.upload_photo")


@bp.get("/orders/<order_id>/photo", responses={200: PHOTO_RESPONSE}, security=BEARER)
@require("admin", "customer")
def get_photo(path: schemas.OrderPath) -> Response:
    """The delivery photo: admins and the order's own customer (anyone else: 404)."""
    file, kind = photos.readable_photo(current_user(), path.order_id, _photos_dir())
    response = send_file(file, mimetype=kind, max_age=0, download_name=f"{path.order_id}.{kind[6:]}")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response
