"""Dispatch over REST: offers (make, accept, decline) and the run-time dispatch settings."""

from __future__ import annotations

import logging

from flask import Response, current_app, jsonify
from pydantic import ValidationError

from order_service.api import dispatch_schemas, schemas
from order_service.api.common import BEARER, blueprint, if_match
from order_service.api.problems import validation_problem
from order_service.api.security import current_user, require
from order_service.dispatch import offers
from order_service.dispatch import settings as dispatch_config
from order_service.orders.events import order_dict
from order_service.store.db import db
from order_service.store.models import Order

logger = logging.getLogger(__name__)

bp = blueprint("dispatch", "Offers and dispatch settings")


def _order_response(order: Order) -> Response:
    response = jsonify(order_dict(order))
    response.headers["ETag"] = f'"{order.version}"'
    return response


@bp.post("/orders/<order_id>/offer", responses={200: schemas.OrderOut}, security=BEARER)
@require("admin")
def make_offer(
    path: schemas.OrderPath, body: dispatch_schemas.OfferCreate, header: schemas.IfMatchHeader
) -> Response:
    """Offer the order to one or more agents; the first to accept gets it.

    Replaces the order's agent and any pending offer. Allowed while the order is
    confirmed, preparing or ready."""
    config = dispatch_config.current(current_app.config["ORDERBUS"])
    order = offers.offer(
        current_user(),
        path.order_id,
        body.agent_ids,
        seconds=body.expires_in_seconds or config.offer_seconds,
        reason=body.reason,
        if_match=if_match(header.if_match),
    )
    return _order_response(order)


@bp.post("/orders/<order_id>/offer/accept", responses={200: schemas.OrderOut}, security=BEARER)
@require("agent")
def accept_offer(path: schemas.OrderPath) -> Response:
    """Accept an offer made to you: the order is assigned to you.

    409 when the offer is no longer open to you (``offer_state``: taken by another
    agent, expired, withdrawn, declined); 404 when it was never offered to you."""
    return _order_response(offers.accept(current_user(), path.order_id))


@bp.post("/orders/<order_id>/offer/decline", responses={200: schemas.OrderOut}, security=BEARER)
@require("agent")
def decline_offer(path: schemas.OrderPath, body: dispatch_schemas.OfferDecline) -> Response:
    """Decline an offer made to you, with an optional reason (shown to admins)."""
    return _order_response(offers.decline(current_user(), path.order_id, reason=body.reason))


@bp.get("/settings/dispatch", responses={200: dispatch_schemas.DispatchSettingsOut}, security=BEARER)
@require("admin")
def get_settings():
    """The effective dispatch settings, their environment defaults and the run-time overrides."""
    return jsonify(dispatch_config.describe(current_app.config["ORDERBUS"]))


@bp.patch("/settings/dispatch", responses={200: dispatch_schemas.DispatchSettingsOut}, security=BEARER)
@require("admin")
def patch_settings(body: dispatch_schemas.DispatchSettingsPatch) -> Response:
    """Override dispatch settings at run time; a field set to null returns to its default."""
    settings = current_app.config["ORDERBUS"]
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    try:
        with db.atomic():
            dispatch_config.update(settings, changes, current_user())
    except ValidationError as exc:
        raise validation_problem(exc) from None
    logger.info("dispatch settings changed by %s: %s", current_user().username, changes)
    return jsonify(dispatch_config.describe(settings))
