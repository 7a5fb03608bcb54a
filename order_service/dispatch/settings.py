"""Dispatch settings: ``ORDERBUS_DISPATCH_*`` defaults, overridden at run time by admins.

There is one business per deployment. The environment gives the defaults
(``config.Settings.dispatch_*``); ``PATCH /api/v1/settings/dispatch`` stores
overrides in the one row of ``dispatch_settings``, so the API and the relay (which
runs the timers) see the same values without a restart. The effective value of a
setting is its override if there is one, else its default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from order_service.config import Settings
from order_service.store.db import Prepared
from order_service.store.inserts import Select
from order_service.store.models import DispatchSettingsRow, User, rfc3339, utcnow


class DispatchConfig(BaseModel):
    """The effective dispatch settings (docs/configuration.md, "Dispatch")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offer_required: bool = Field(description="an admin's assignment is an offer the agent must accept")
    offer_seconds: int = Field(ge=5, le=3600, description="how long an offer waits for an answer")
    auto_assign: bool = Field(description="offer waiting orders to online agents automatically")
    auto_assign_on: Literal["confirmed", "ready"] = Field(description="the status from which orders wait")
    agent_cap: int = Field(ge=1, le=100, description="auto-assignment: most active orders + offers per agent")
    prep_minutes: int = Field(ge=0, le=1440, description="promised ready time = confirmation + this")
    travel_minutes: int = Field(ge=0, le=1440, description="delivery ETA = pickup + this (no coordinates)")
    travel_speed_kmh: float = Field(gt=0, le=200, description="with coordinates: ETA = distance / speed")
    origin_lat: float | None = Field(ge=-90, le=90, description="the business's latitude, for the ETA")
    origin_lon: float | None = Field(ge=-180, le=180, description="the business's longitude")
    delay_unconfirmed_seconds: int = Field(ge=0, description="alert when placed this long; 0: off")
    delay_unassigned_seconds: int = Field(ge=0, description="alert when ready, no agent, this long; 0: off")
    delay_late_grace_seconds: int = Field(ge=0, description="alert this long after a promised time passes")
    pod_code: Literal["off", "optional", "required"] = Field(description="the customer's code at delivery")
    pod_photo: Literal["off", "optional", "required"] = Field(description="the courier's photo at delivery")

    @model_validator(mode="after")
    def _origin_pair(self) -> DispatchConfig:
        if (self.origin_lat is None) != (self.origin_lon is None):
            raise ValueError("origin_lat and origin_lon are set together (or both null)")
        return self

    @classmethod
    def defaults(cls, settings: Settings) -> DispatchConfig:
        return cls(**{name: getattr(settings, f"dispatch_{name}") for name in cls.model_fields})


NAMES = tuple(DispatchConfig.model_fields)


_ROW = Select(DispatchSettingsRow, "id")  # every status change reads it: SQL built once


def _row() -> DispatchSettingsRow | None:
    return _ROW.one(1)


# (defaults, overrides as stored) -> the effective settings: built once per distinct pair,
# not on every request (the row is still read each time: another process may change it).
_BUILT: dict[tuple[tuple, str | None], DispatchConfig] = {}
_VARIABLES = tuple(f"dispatch_{name}" for name in NAMES)


# The overrides as stored (their JSON text): the key of what was built from them.
_OVERRIDES = Prepared(
    lambda: DispatchSettingsRow.select(DispatchSettingsRow.overrides).where(DispatchSettingsRow.id == 1)
)


def current(settings: Settings) -> DispatchConfig:
    """The effective settings now (one small query)."""
    found = _OVERRIDES.execute(1)
    stored = found[0][0] if found else None
    key = (tuple(getattr(settings, name) for name in _VARIABLES), stored)
    config = _BUILT.get(key)
    if config is not None:
        return config
    config = DispatchConfig.defaults(settings)
    overrides = DispatchSettingsRow.overrides.python_value(stored)
    if overrides:
        known = {k: v for k, v in overrides.items() if k in NAMES}
        config = DispatchConfig(**{**config.model_dump(), **known})
    if len(_BUILT) >= 64:
        _BUILT.clear()
    _BUILT[key] = config
    return config


def describe(settings: Settings) -> dict[str, Any]:
    """What GET /settings/dispatch answers: effective values, defaults and overrides."""
    row = _row()
    return {
        "values": current(settings).model_dump(),
        "defaults": DispatchConfig.defaults(settings).model_dump(),
        "overrides": dict(row.overrides) if row else {},
        "version": row.version if row else 0,
        "updated_at": rfc3339(row.updated_at) if row else None,
        "updated_by": row.updated_by if row else None,
    }


def update(settings: Settings, changes: dict[str, Any], user: User) -> DispatchConfig:
    """Apply overrides (``None`` removes one: back to the default) inside the caller's transaction.

    Raises pydantic's ValidationError when the result is not a valid configuration.
    """
    row = _row()
    overrides = dict(row.overrides) if row else {}
    for name, value in changes.items():
        if value is None:
            overrides.pop(name, None)
        else:
            overrides[name] = value
    effective = DispatchConfig(**{**DispatchConfig.defaults(settings).model_dump(), **overrides})
    if row is None:
        DispatchSettingsRow.create(id=1, overrides=overrides, version=1, updated_by=user.id)
    else:
        row.overrides = overrides
        row.version += 1
        row.updated_at = utcnow()
        row.updated_by = user.id
        row.save()
    return effective
