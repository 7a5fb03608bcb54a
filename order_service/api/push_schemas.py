"""Web Push bodies: the VAPID public key and an agent's device subscription."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from order_service.api.schemas import NO_NUL, Strict

# The device's own id (the app keeps one per installation): letters, digits, - and _.
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
B64Url = r"^[A-Za-z0-9_-]+={0,2}$"


class SubscriptionKeys(Strict):
    p256dh: str = Field(max_length=100, pattern=B64Url, description="the browser's P-256 key, base64url")
    auth: str = Field(max_length=32, pattern=B64Url, description="the browser's auth secret, base64url")


class BrowserSubscription(Strict):
    """What ``PushSubscription.toJSON()`` gives in the browser."""

    endpoint: str = Field(max_length=1024, pattern=NO_NUL, description="the push service's https URL")
    expirationTime: float | None = Field(None, description="ignored")  # noqa: N815 (the browser's name)
    keys: SubscriptionKeys


class PushSubscriptionIn(Strict):
    device_id: DeviceId
    subscription: BrowserSubscription


class DeviceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: DeviceId


class PushKeyOut(BaseModel):
    public_key: str = Field(description="VAPID public key: applicationServerKey for pushManager.subscribe")


class PushSubscriptionOut(BaseModel):
    id: str
    agent_id: str
    device_id: str
    endpoint_origin: str = Field(description="the push service (the full endpoint is not shown again)")
    created_at: str
    last_sent_at: str | None
    last_status: int | None = Field(description="the push service's last answer (201: delivered to it)")


class PushSubscriptionList(BaseModel):
    subscriptions: list[PushSubscriptionOut]
