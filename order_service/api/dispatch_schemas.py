"""Dispatch's request and response bodies: offers and the business's dispatch settings
(the shared field types are in ``schemas``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from order_service.api.schemas import AgentIdIn, OptionalInt, Reason, Strict


class OfferCreate(Strict):
    agent_ids: list[AgentIdIn] = Field(min_length=1, max_length=20)
    expires_in_seconds: OptionalInt = Field(None, ge=5, le=3600, description="default: offer_seconds")
    reason: Reason = ""


class OfferDecline(Strict):
    reason: Reason = ""

    @model_validator(mode="before")
    @classmethod
    def _body_is_optional(cls, data: object) -> object:
        return {} if data is None else data  # a decline without a reason may send no body


class DispatchSettingsPatch(Strict):
    """Each field given overrides its ORDERBUS_DISPATCH_* default; null returns it to the default."""

    offer_required: bool | None = None
    offer_seconds: OptionalInt = Field(None, ge=5, le=3600)
    auto_assign: bool | None = None
    auto_assign_on: Literal["confirmed", "ready"] | None = None
    agent_cap: OptionalInt = Field(None, ge=1, le=100)
    prep_minutes: OptionalInt = Field(None, ge=0, le=1440)
    travel_minutes: OptionalInt = Field(None, ge=0, le=1440)
    travel_speed_kmh: float | None = Field(None, gt=0, le=200)
    origin_lat: float | None = Field(None, ge=-90, le=90)
    origin_lon: float | None = Field(None, ge=-180, le=180)
    delay_unconfirmed_seconds: OptionalInt = Field(None, ge=0, le=86400)
    delay_unassigned_seconds: OptionalInt = Field(None, ge=0, le=86400)
    delay_late_grace_seconds: OptionalInt = Field(None, ge=0, le=86400)
    pod_code: Literal["off", "optional", "required"] | None = None
    pod_photo: Literal["off", "optional", "required"] | None = None


class DispatchSettingsOut(BaseModel):
    values: dict
    defaults: dict
    overrides: dict
    version: int
    updated_at: str | None
    updated_by: str | None
