"""Webhooks (issue #6): endpoints admins register, the deliveries the bridge makes, the signature.

The API registers endpoints; ``python -m order_service.webhooks`` follows the event log
(:func:`event_log`, the query behind ``GET /api/v1/events``), fans each event out
into one delivery row per subscribed endpoint and POSTs it. Signing:
``X-Orderbus-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by the
endpoint's secret>`` (see :func:`sign` and :func:`verify`, the receiver's recipe).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Self
from urllib.parse import urlsplit

import peewee as pw

from order_service.store.db import db
from order_service.store.models import BaseModel, JSONField, Outbox, new_id, utcnow
from order_service.webhooks import destination

SIGNATURE_HEADER = "X-Orderbus-Signature"
EVENT_ID_HEADER = "X-Orderbus-Event-Id"
EVENT_HEADER = "X-Orderbus-Event"
TIMESTAMP_HEADER = "X-Orderbus-Timestamp"
DELIVERY_HEADER = "X-Orderbus-Delivery"


class WebhookEndpoint(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    url = pw.TextField()
    secret = pw.TextField()
    events = JSONField()
    description = pw.TextField(default="")
    state = pw.CharField(max_length=16, default="active")
    start_cursor = pw.BigIntegerField()
    created_at = pw.DateTimeField(default=utcnow)
    created_by = pw.CharField(max_length=32, null=True)
    failing_since = pw.DateTimeField(null=True)

    class Meta:
        table_name = "webhook_endpoints"

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events


class WebhookDelivery(BaseModel):
    id = pw.BigAutoField()
    endpoint = pw.ForeignKeyField(WebhookEndpoint, column_name="endpoint_id", on_delete="CASCADE")
    endpoint_id: str
    cursor = pw.BigIntegerField()
    event_id = pw.CharField(max_length=40)
    event = pw.CharField(max_length=40)
    payload = pw.TextField()
    state = pw.CharField(max_length=16, default="pending")
    attempts = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    next_attempt_at = pw.DateTimeField(default=utcnow)
    finished_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "webhook_deliveries"

    @classmethod
    def due(cls, now: datetime, limit: int) -> pw.ModelSelect[Self]:
        return (
            cls.select(cls, WebhookEndpoint)
            .join(WebhookEndpoint)
            .where((cls.state == "pending") & (cls.next_attempt_at <= now))
            .order_by(cls.next_attempt_at, cls.id)
            .limit(limit)
        )

    @classmethod
    def next_due_at(cls) -> datetime | None:
        row = cls.select(pw.fn.MIN(cls.next_attempt_at)).where(cls.state == "pending").scalar()
        return row if row is None or isinstance(row, datetime) else datetime.fromisoformat(str(row))


class WebhookAttempt(BaseModel):
    id = pw.BigAutoField()
    delivery = pw.ForeignKeyField(WebhookDelivery, column_name="delivery_id", on_delete="CASCADE")
    delivery_id: int
    endpoint = pw.ForeignKeyField(WebhookEndpoint, column_name="endpoint_id", on_delete="CASCADE")
    endpoint_id: str
    number = pw.IntegerField()
    at = pw.DateTimeField(default=utcnow)
    status_code = pw.IntegerField(null=True)
    error = pw.TextField(default="")
    duration_ms = pw.IntegerField()

    class Meta:
        table_name = "webhook_attempts"


class WebhookCursor(BaseModel):
    id = pw.IntegerField(primary_key=True)
    cursor = pw.BigIntegerField()
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "webhook_cursor"


# --- the event log ----------------------------------------------------------------


def event_log(after: int, limit: int) -> pw.ModelSelect[Outbox]:
    """Events after ``after`` in commit order: what ``GET /api/v1/events`` serves.

    ``orders/new`` rows repeat their ``status`` row's event, and a customer's feed
    (``customer``) restates its orders' events for that customer, so the log skips both;
    so it does the catalog's rows (the whole catalog each: read it from GET /catalog or
    its topic)."""
    return (
        Outbox.select()
        .where((Outbox.id > after) & Outbox.kind.not_in(("new", "customer", "catalog", "location")))
        .order_by(Outbox.id)
        .limit(limit)
    )


def latest_cursor() -> int:
    return Outbox.select(pw.fn.MAX(Outbox.id)).scalar() or 0


# --- signing ----------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """The receiver's check: recompute over the raw body, compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


# --- registration (the API) -------------------------------------------------------


def register(
    url: str, events: list[str], description: str, user_id: str | None, *, allow_private: bool = False
) -> WebhookEndpoint:
    """A new endpoint receives the events committed after it was registered. InvalidField
    ("url") for a host that webhooks may not reach (``destination.check_url``)."""
    destination.check_url(urlsplit(url).hostname or "", allow_private)
    with db.atomic():
        return WebhookEndpoint.create(
            id=new_id("wh"),
            url=url,
            secret="whsec_" + secrets.token_urlsafe(32),
            events=sorted(set(events)),
            description=description,
            state="active",
            start_cursor=latest_cursor(),
            created_by=user_id,
        )


def endpoint_dict(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict:
    from order_service.store.models import rfc3339

    body = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "state": endpoint.state,
        "created_at": rfc3339(endpoint.created_at),
        "failing_since": rfc3339(endpoint.failing_since),
    }
    if with_secret:
        body["secret"] = endpoint.secret
    return body


def delivery_dict(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict:
    from order_service.store.models import rfc3339

    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event": delivery.event,
        "cursor": delivery.cursor,
        "state": delivery.state,
        "attempts": [
            {
                "number": a.number,
                "at": rfc3339(a.at),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
            }
            for a in attempts
        ],
        "created_at": rfc3339(delivery.created_at),
        "next_attempt_at": rfc3339(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "finished_at": rfc3339(delivery.finished_at),
    }


# --- the bridge's bookkeeping -----------------------------------------------------


def fan_out(batch: int = 200) -> int:
    """Queue deliveries for the events after the stored cursor; returns how many events were read.

    The delivery rows and the new cursor commit together: after a crash either both
    exist or neither, and the unique (endpoint, event) index makes a replay harmless."""
    with db.atomic():
        row = WebhookCursor.get_or_none(WebhookCursor.id == 1)
        if row is None:
            # First run: start at the oldest endpoint's registration point.
            start = WebhookEndpoint.select(pw.fn.MIN(WebhookEndpoint.start_cursor)).scalar()
            row = WebhookCursor.create(id=1, cursor=start if start is not None else latest_cursor())
        events = list(event_log(row.cursor, batch))
        if not events:
            return 0
        endpoints = list(WebhookEndpoint.select())
        now = utcnow()
        for event in events:
            for endpoint in endpoints:
                if event.id > endpoint.start_cursor and endpoint.wants(event.event):
                    WebhookDelivery.insert(
                        endpoint=endpoint.id,
                        cursor=event.id,
                        event_id=event.event_id,
                        event=event.event,
                        payload=event.payload,
                        created_at=now,
                        next_attempt_at=now,
                    ).on_conflict_ignore().execute()
        WebhookCursor.update(cursor=events[-1].id, updated_at=now).where(WebhookCursor.id == 1).execute()
    return len(events)


def record_attempt(
    delivery: WebhookDelivery,
    *,
    status_code: int | None,
    error: str,
    duration_ms: int,
    retry_seconds: float,
    backoff_seconds: float,
    backoff_max_seconds: float,
) -> str:
    """Log one attempt and move the delivery on: delivered, retried later, or failed."""
    now = utcnow()
    ok = status_code is not None and 200 <= status_code < 300
    number = delivery.attempts + 1
    with db.atomic():
        if not WebhookDelivery.select().where(WebhookDelivery.id == delivery.id).exists():
            return "deleted"  # its endpoint was removed while the POST was in flight
        WebhookAttempt.create(
            delivery=delivery.id,
            endpoint=delivery.endpoint_id,
            number=number,
            at=now,
            status_code=status_code,
            error=error[:500],
            duration_ms=duration_ms,
        )
        changes: dict = {"attempts": number}
        if ok:
            changes.update(state="delivered", finished_at=now)
            WebhookEndpoint.update(state="active", failing_since=None).where(
                WebhookEndpoint.id == delivery.endpoint_id
            ).execute()
        else:
            delay = min(backoff_seconds * 2 ** (number - 1), backoff_max_seconds)
            next_at = now + timedelta(seconds=delay)
            if next_at > delivery.created_at + timedelta(seconds=retry_seconds):
                changes.update(state="failed", finished_at=now)
                WebhookEndpoint.update(state="failing", failing_since=now).where(
                    (WebhookEndpoint.id == delivery.endpoint_id) & (WebhookEndpoint.state == "active")
                ).execute()
            else:
                changes["next_attempt_at"] = next_at
        WebhookDelivery.update(**changes).where(WebhookDelivery.id == delivery.id).execute()
    return changes.get("state", "pending")


def payload_bytes(delivery: WebhookDelivery) -> bytes:
    """The body sent: the event exactly as the log holds it (the same bytes on every attempt)."""
    return delivery.payload.encode()
