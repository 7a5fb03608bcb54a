"""Webhook endpoints over REST (admin only): register, list, remove, and every delivery attempt."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from order_service.api import webhook_schemas as schemas
from order_service.api.common import BEARER, blueprint
from order_service.api.security import current_user, require
from order_service.errors import NotFound
from order_service.store.db import db
from order_service.webhooks import model as webhooks
from order_service.webhooks.model import WebhookAttempt, WebhookDelivery, WebhookEndpoint

bp = blueprint("webhooks", "Webhook endpoints fed by python -m order_service.webhooks")


def _endpoint(webhook_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == webhook_id)
    if endpoint is None:
        raise NotFound("webhook", webhook_id)
    return endpoint


@bp.post("/webhooks", responses={201: schemas.WebhookOut}, security=BEARER)
@require("admin")
def create_webhook(body: schemas.WebhookCreate) -> Response:
    """Register an endpoint. The response carries its signing ``secret``, shown only here.

    It receives the events committed after this call, each POSTed as JSON with
    ``X-Orderbus-Signature: sha256=<HMAC-SHA256 of the raw body>``, ``X-Orderbus-Event-Id``
    and ``X-Orderbus-Timestamp`` (see docs/bridges.md, Webhooks)."""
    endpoint = webhooks.register(
        body.url,
        list(body.events),
        body.description,
        current_user().id,
        allow_private=current_app.config["ORDERBUS"].webhooks_allow_private,
    )
    response = jsonify(webhooks.endpoint_dict(endpoint, with_secret=True))
    response.status_code = 201
    return response


@bp.get("/webhooks", responses={200: schemas.WebhookList}, security=BEARER)
@require("admin")
def list_webhooks():
    """Every registered endpoint and whether it is failing."""
    rows = WebhookEndpoint.select().order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    return jsonify(webhooks=[webhooks.endpoint_dict(e) for e in rows])


@bp.get("/webhooks/<webhook_id>", responses={200: schemas.WebhookOut}, security=BEARER)
@require("admin")
def get_webhook(path: schemas.WebhookPath) -> Response:
    """One endpoint."""
    return jsonify(webhooks.endpoint_dict(_endpoint(path.webhook_id)))


@bp.delete("/webhooks/<webhook_id>", responses={204: None}, security=BEARER)
@require("admin")
def delete_webhook(path: schemas.WebhookPath) -> tuple[str, int]:
    """Remove an endpoint, its pending deliveries and its log."""
    endpoint = _endpoint(path.webhook_id)
    with db.atomic():
        WebhookAttempt.delete().where(WebhookAttempt.endpoint == endpoint.id).execute()
        WebhookDelivery.delete().where(WebhookDelivery.endpoint == endpoint.id).execute()
        endpoint.delete_instance()
    return "", 204


@bp.get("/webhooks/<webhook_id>/deliveries", responses={200: schemas.WebhookDeliveryList}, security=BEARER)
@require("admin")
def list_deliveries(path: schemas.WebhookPath, query: schemas.DeliveryQuery) -> Response:
    """The endpoint's newest deliveries, each with every attempt (status code or error, duration)."""
    endpoint = _endpoint(path.webhook_id)
    deliveries = list(
        WebhookDelivery.select()
        .where(WebhookDelivery.endpoint == endpoint.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(query.limit)
    )
    attempts: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in (
            WebhookAttempt.select()
            .where(WebhookAttempt.delivery.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return jsonify(deliveries=[webhooks.delivery_dict(d, attempts[d.id]) for d in deliveries])
