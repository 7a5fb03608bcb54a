"""Webhook endpoints' request and response bodies (the shared field types are in ``schemas``)."""

from __future__ import annotations

import unicodedata
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from order_service.api.schemas import NO_NUL, Reason, Strict
from order_service.orders.events import OrderEvent

# Every event name the service records (events.ORDER_EVENTS, the worklist), or "*".
WebhookEvent = Literal["*", OrderEvent, "agent.worklist"]


# What _check_url accepts, for the document: an absolute http(s) URL with a host, and no
# control character or white space anywhere.
WEBHOOK_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://([^/?#@\s\x00-\x1f\x7f]*@)?([^/?#@:\s\[\]\x00-\x1f\x7f]+|\[[0-9A-Fa-f:.]+\])[^\s\x00-\x1f\x7f]*$"


class WebhookCreate(Strict):
    url: str = Field(
        max_length=2000,
        description="http:// or https:// URL the events are POSTed to",
        json_schema_extra={"format": "uri", "pattern": WEBHOOK_URL},
    )
    events: list[WebhookEvent] = Field(min_length=1, max_length=20, description='event types, or ["*"]')
    description: Reason = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        """Its form; whether its address may be reached is the domain's rule (webhooks.register)."""
        if any(unicodedata.category(c)[0] in "CZ" for c in url):  # control, format, separators
            raise ValueError("url may not contain control characters or white space")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            raise ValueError("url has an invalid port") from None
        return url


class WebhookPath(BaseModel):
    webhook_id: str = Field(max_length=32, pattern=NO_NUL)


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    state: Literal["active", "failing"]
    created_at: str
    failing_since: str | None
    secret: str | None = Field(None, description="only in the response to POST: keep it to verify signatures")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class WebhookAttemptOut(BaseModel):
    number: int
    at: str
    status_code: int | None
    error: str
    duration_ms: int


class WebhookDeliveryOut(BaseModel):
    id: int
    event_id: str
    event: str
    cursor: int
    state: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttemptOut]
    created_at: str
    next_attempt_at: str | None
    finished_at: str | None


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryOut]
