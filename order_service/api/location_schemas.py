"""Live location's response bodies (issue 19): an order's trail."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TrailPoint(BaseModel):
    lat: float
    lon: float
    tst: int = Field(description="when the courier's device took the position (unix seconds)")


class TrailOut(BaseModel):
    order_id: str
    points: list[TrailPoint] = Field(description="oldest first, the newest 500 at most")
