"""Live location (issue 19): the positions devices report, checked, stored and republished.

A device (the courier app, or OwnTracks in JSON mode) publishes its position on its own
``agents/<id>/location/report`` (QoS 0 or 1, not retained). Only the service reads that
topic. :func:`parse` checks a report (size, JSON, types, ranges, a ``tst`` not more than
:data:`FUTURE_SLACK_SECONDS` ahead); :func:`record` stores it as the agent's latest
position unless it is not newer than the one held, appends it to the trail of every order
the agent carries (``picked_up``), and writes ``agents/<id>/location`` (retained, for
admins' dashboards) to the outbox in the same transaction. :func:`sweep` marks a position
stale after ``ORDERBUS_LOCATION_STALE_SECONDS`` without a report, and clears the retained
message (empty payload) when the agent went offline after its last report.

Every report dropped is counted by reason (:data:`DROP_REASONS`) in ``location_drops``,
which ``/metrics`` shows as ``orderbus_locations_dropped_total{reason}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee

import contract
from order_service.orders import eta, feed
from order_service.orders import service as orders
from order_service.orders.eta import DispatchConfig
from order_service.store.db import db, hold_writer_lock
from order_service.store.locations import AgentLocation, LocationDrop, OrderTrailPoint
from order_service.store.models import Agent, Order, Outbox, rfc3339, tuple_rows

EVENT = "agent.location"
FUTURE_SLACK_SECONDS = 300
DROP_REASONS = (
    "too_large",  # more than contract.LOCATION_REPORT_MAX_BYTES
    "malformed",  # not a JSON object
    "invalid",  # a field missing, of the wrong type or out of range
    "future",  # tst more than FUTURE_SLACK_SECONDS ahead of the service's clock
    "old",  # tst not newer than the position held
    "throttled",  # closer to the previous report than ORDERBUS_LOCATION_MIN_INTERVAL_SECONDS
    "unknown_agent",  # no such active agent
    "overloaded",  # the intake's queue was full
)
# Optional fields: (low, high) inclusive.
_OPTIONAL = {"acc": (0.0, 100_000.0), "batt": (0, 100), "speed": (0.0, 500.0), "heading": (0.0, 360.0)}


@dataclass(frozen=True)
class Report:
    lat: float
    lon: float
    tst: int
    acc: float | None = None
    batt: int | None = None
    speed: float | None = None
    heading: float | None = None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse(payload: bytes, now_unix: float) -> Report | str:
    """The report in ``payload``, or the reason it is dropped (one of :data:`DROP_REASONS`).

    Ours: ``{"lat", "lon", "tst", "acc"?, "batt"?, "speed"?, "heading"?}``; OwnTracks:
    the same with ``"_type": "location"`` and fields of its own, ignored. ``tst`` is unix
    seconds; ``null`` for an optional field means unknown."""
    if len(payload) > contract.LOCATION_REPORT_MAX_BYTES:
        return "too_large"
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "malformed"
    if not isinstance(body, dict):
        return "malformed"
    if "_type" in body and body["_type"] != "location":
        return "invalid"  # OwnTracks' other messages (waypoints, transitions...)
    lat, lon, tst = body.get("lat"), body.get("lon"), body.get("tst")
    if not (_number(lat) and _number(lon) and _number(tst)):
        return "invalid"
    lat, lon, tst = float(lat), float(lon), float(tst)  # type: ignore[arg-type]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < tst < 2**40):
        return "invalid"
    optional: dict[str, float | None] = {}
    for name, (low, high) in _OPTIONAL.items():
        value = body.get(name)
        if value is None:
            optional[name] = None
        elif not _number(value) or not low <= float(value) <= high:
            return "invalid"
        else:
            optional[name] = float(value)
    if tst > now_unix + FUTURE_SLACK_SECONDS:
        return "future"
    batt = optional["batt"]
    return Report(
        lat,
        lon,
        int(tst),
        acc=optional["acc"],
        batt=None if batt is None else round(batt),
        speed=optional["speed"],
        heading=optional["heading"],
    )


def carried(agent_id: str) -> list[Order]:
    """The orders the agent carries: assigned to it and picked up."""
    return list(Order.active_for_agent(agent_id).where(Order.status == "picked_up"))


def record(
    agent_id: str, report: Report, received_at: datetime, trail_points: int, config: DispatchConfig
) -> str | None:
    """Store an accepted report and write its outbox rows: the agent's position, and for
    each order it carries a trail point and the customer's feed (with a new ETA when it
    moved by a minute or more); None, or the reason it is dropped."""
    with db.atomic():
        agent = Agent.get_or_none((Agent.id == agent_id) & (Agent.active == True))  # noqa: E712
        if agent is None:
            return "unknown_agent"
        held = AgentLocation.get_or_none(AgentLocation.agent == agent_id)
        if held is not None and report.tst <= held.tst:
            return "old"
        fields = {
            "lat": report.lat,
            "lon": report.lon,
            "acc": report.acc,
            "tst": report.tst,
            "batt": report.batt,
            "speed": report.speed,
            "heading": report.heading,
            "received_at": received_at,
            "stale": False,
        }
        if held is None:
            AgentLocation.insert(agent=agent_id, **fields).execute()
        else:
            AgentLocation.update(**fields).where(AgentLocation.agent == agent_id).execute()
        orders = carried(agent_id)
        for order in orders:
            _append_trail(order.id, report, trail_points)
        _publish(AgentLocation.get_by_id(agent_id), [o.id for o in orders])
        for order in orders:
            _tell_customer(order, report, received_at, config)
    return None


def _tell_customer(order: Order, report: Report, received_at: datetime, config: DispatchConfig) -> None:
    """A new ETA (an order event, which rewrites the feed too) when it moved by a minute
    or more; else the customer's feed alone, with the courier's new position."""
    new = eta.eta_from_position(
        received_at, config, report.lat, report.lon, order.delivery_lat, order.delivery_lon
    )
    if new is not None and eta.eta_moved(order.eta, new):
        order = orders.locked(order.id)
        if order.status == "picked_up":
            orders.bump(order, None, "order.updated", reason="ETA from the courier's position", eta=new)
            return
    feed.record_location_feed(order)


def _append_trail(order_id: str, report: Report, keep: int) -> None:
    OrderTrailPoint.create(order=order_id, lat=report.lat, lon=report.lon, tst=report.tst)
    oldest_kept = (
        OrderTrailPoint.select(OrderTrailPoint.id)
        .where(OrderTrailPoint.order == order_id)
        .order_by(OrderTrailPoint.id.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar()
    )
    if oldest_kept is not None:
        OrderTrailPoint.delete().where(
            (OrderTrailPoint.order == order_id) & (OrderTrailPoint.id < oldest_kept)
        ).execute()


def trail(order_id: str, limit: int) -> list[dict]:
    """The order's newest ``limit`` trail points, oldest first."""
    rows = (
        OrderTrailPoint.select(OrderTrailPoint.lat, OrderTrailPoint.lon, OrderTrailPoint.tst)
        .where(OrderTrailPoint.order == order_id)
        .order_by(OrderTrailPoint.id.desc())
        .limit(limit)
    )
    return [{"lat": p.lat, "lon": p.lon, "tst": p.tst} for p in reversed(list(rows))]


def location_payload(row: AgentLocation, order_ids: list[str]) -> dict:
    """The payload of ``agents/<id>/location``."""
    return {
        **contract.envelope(EVENT, rfc3339(row.received_at)),
        "agent_id": row.agent_id,
        "lat": row.lat,
        "lon": row.lon,
        "acc": row.acc,
        "tst": row.tst,
        "batt": row.batt,
        "received_at": rfc3339(row.received_at),
        "stale": bool(row.stale),
        "order_ids": order_ids,
    }


def _publish(row: AgentLocation, order_ids: list[str]) -> None:
    payload = location_payload(row, order_ids)
    _outbox(row.agent_id, payload["event_id"], contract.dumps(payload))


def _outbox(agent_id: str, event_id: str, text: str) -> None:
    hold_writer_lock()  # outbox id order = commit order (see db.py)
    Outbox.create(
        event_id=event_id,
        event=EVENT,
        kind="location",
        topic=contract.agent_location(agent_id),
        payload=text,
        agent_id=agent_id,
    )


def sweep(stale_seconds: int, now: datetime) -> int:
    """Mark stale the positions not renewed for ``stale_seconds``; clear those of agents gone
    offline (or deactivated) since their last report. Returns how many outbox rows it wrote."""
    written = 0
    gone = (
        AgentLocation.select(AgentLocation.agent)
        .join(Agent)
        .where(
            ~Agent.active | ((Agent.presence == "offline") & (Agent.presence_at >= AgentLocation.received_at))
        )
    )
    for (agent_id,) in tuple_rows(gone):
        with db.atomic():
            if AgentLocation.delete().where(AgentLocation.agent == agent_id).execute():
                _outbox(agent_id, contract.envelope(EVENT, rfc3339(now))["event_id"], "")
                for order in carried(agent_id):
                    feed.record_location_feed(order)
                written += 1
    cutoff = now - timedelta(seconds=stale_seconds)
    old = AgentLocation.select(AgentLocation.agent).where(
        (AgentLocation.stale == False) & (AgentLocation.received_at < cutoff)  # noqa: E712
    )
    for (agent_id,) in tuple_rows(old):
        with db.atomic():
            marked = (
                AgentLocation.update(stale=True)
                .where((AgentLocation.agent == agent_id) & (AgentLocation.received_at < cutoff))
                .execute()
            )
            if marked:
                held = carried(agent_id)
                _publish(AgentLocation.get_by_id(agent_id), [o.id for o in held])
                for order in held:
                    feed.record_location_feed(order)
                written += 1
    return written


def prune_published() -> int:
    """Delete the published ``agents/<id>/location`` rows a newer row of the same topic
    replaced: positions are not events (GET /events, webhooks and the broker's recovery
    skip them), so only each agent's newest is kept. Returns how many went."""
    newer = Outbox.alias()
    replaced = peewee.fn.EXISTS(
        newer.select(peewee.SQL("1")).where((newer.topic == Outbox.topic) & (newer.id > Outbox.id))
    )
    with db.atomic():
        return int(
            Outbox.delete()
            .where((Outbox.kind == "location") & Outbox.published_at.is_null(False) & replaced)
            .execute()
        )


def count_drops(counts: dict[str, int]) -> None:
    """Add dropped reports to the counters (one statement per reason)."""
    with db.atomic():
        for reason, count in counts.items():
            if not count:
                continue
            added = (
                LocationDrop.update(count=LocationDrop.count + count)
                .where(LocationDrop.reason == reason)
                .execute()
            )
            if not added:
                try:
                    with db.atomic():
                        LocationDrop.insert(reason=reason, count=count).execute()
                except peewee.IntegrityError:  # another writer created it meanwhile
                    LocationDrop.update(count=LocationDrop.count + count).where(
                        LocationDrop.reason == reason
                    ).execute()


def drops() -> dict[str, int]:
    return {row.reason: row.count for row in LocationDrop.select()}
