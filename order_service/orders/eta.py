"""Promised-ready time and estimated delivery time: a deliberately simple, documented model.

* Promised ready (``promised_at``), set when the order is confirmed:
  confirmation time + preparation minutes (the request's ``prep_minutes``, else the
  business default ``prep_minutes``).
* Estimated delivery (``eta``), set when the agent picks the order up:
  pickup time + travel time, where travel time is
  - straight-line (haversine) distance from the business (``origin_lat/lon``) to the
    order's ``delivery_location`` divided by ``travel_speed_kmh``, when both are known;
  - otherwise the fixed ``travel_minutes``.
  Once the order is picked up and its courier shares a position (issue 19), the ETA is
  recomputed on each position: the position's time + straight-line distance from the
  courier to the delivery location / ``travel_speed_kmh`` (:func:`eta_from_position`);
  it is republished only when it moves by at least ``ETA_REPUBLISH_SECONDS``.
  A straight line is shorter than any road: choose the speed as an *effective*
  door-to-door speed (the default, 20 km/h, suits a bicycle or a scooter in a city).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

EARTH_RADIUS_KM = 6371.0088


class DispatchConfig(Protocol):
    """The business settings the model reads (``dispatch.settings.DispatchConfig``, frozen)."""

    @property
    def prep_minutes(self) -> int: ...
    @property
    def travel_minutes(self) -> int: ...
    @property
    def travel_speed_kmh(self) -> float: ...
    @property
    def origin_lat(self) -> float | None: ...
    @property
    def origin_lon(self) -> float | None: ...


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points, in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def promised_ready(confirmed_at: datetime, config: DispatchConfig, prep_minutes: int | None) -> datetime:
    minutes = config.prep_minutes if prep_minutes is None else prep_minutes
    return confirmed_at + timedelta(minutes=minutes)


def travel_time(config: DispatchConfig, lat: float | None, lon: float | None) -> timedelta:
    if config.origin_lat is None or config.origin_lon is None or lat is None or lon is None:
        return timedelta(minutes=config.travel_minutes)
    km = haversine_km(config.origin_lat, config.origin_lon, lat, lon)
    return timedelta(hours=km / config.travel_speed_kmh)


def delivery_eta(
    picked_up_at: datetime, config: DispatchConfig, lat: float | None, lon: float | None
) -> datetime:
    return picked_up_at + travel_time(config, lat, lon)


ETA_REPUBLISH_SECONDS = 60


def eta_from_position(
    at: datetime, config: DispatchConfig, lat: float, lon: float, to_lat: float | None, to_lon: float | None
) -> datetime | None:
    """Delivery ETA from the courier's position at ``at``; None without a delivery location."""
    if to_lat is None or to_lon is None:
        return None
    return at + timedelta(hours=haversine_km(lat, lon, to_lat, to_lon) / config.travel_speed_kmh)


def eta_moved(old: datetime | None, new: datetime) -> bool:
    """Whether a recomputed ETA is worth publishing (a minute or more from the one held)."""
    return old is None or abs((new - old).total_seconds()) >= ETA_REPUBLISH_SECONDS
