"""Health, readiness, metrics, the event log and the lifecycle table."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator

import peewee
from flask import Response, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from order_service import lifecycle
from order_service.api import schemas, security
from order_service.api.common import BEARER, blueprint, public
from order_service.api.security import require
from order_service.dispatch import location
from order_service.errors import Forbidden
from order_service.outbox import leader
from order_service.store.db import db
from order_service.store.migrations import discover
from order_service.store.models import Agent, Order, Outbox, PodCodeRefusal, tuple_rows, utcnow
from order_service.webhooks import model as webhooks

bp = blueprint("system", "Health, metrics, event log")
METRICS_RESPONSE = {"content": {"text/plain": {"schema": {"type": "string"}}}}


@bp.get("/healthz", responses={200: schemas.Health})
def healthz():
    """The process is up."""
    return jsonify(status="ok")


public("system.healthz")


def _schema_state() -> tuple[int, int]:
    versions = [m.version for m in discover()]
    latest = max(versions, default=0)
    try:
        applied = {row[0] for row in db.execute_sql("SELECT version FROM schema_migrations")}
    except peewee.DatabaseError:
        applied = set()
    # Migrations written in parallel can be applied out of order (0003 before 0002): the
    # schema is current when every known migration is applied, not merely the newest one.
    missing = [v for v in versions if v not in applied]
    current = min(missing) - 1 if missing else max(applied, default=0)
    return current, latest


def _outbox_backlog() -> tuple[int, float]:
    pending = Outbox.select().where(Outbox.published_at.is_null())
    count = pending.count()
    oldest = pending.order_by(Outbox.id).first()
    age = (utcnow() - oldest.created_at).total_seconds() if oldest else 0.0
    return count, age


@bp.get("/readyz", responses={200: schemas.Ready, 503: schemas.Ready})
def readyz():
    """Ready to serve: the database answers and its schema is current (503 otherwise)."""
    try:
        current, latest = _schema_state()
        pending, age = _outbox_backlog()
    except peewee.DatabaseError as exc:
        return jsonify(status="unavailable", detail=f"database: {exc}"), 503
    body = {
        "status": "ok" if current == latest else "unavailable",
        "schema_version": current,
        "schema_expected": latest,
        "outbox_pending": pending,
        "outbox_oldest_seconds": round(age, 3),
    }
    if current != latest:
        body["detail"] = "run: python -m order_service migrate"
    return jsonify(body), 200 if current == latest else 503


public("system.readyz")


class _DatabaseCollector:
    """Gauges read from the database at scrape time: right whatever the worker count."""

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("orderbus_orders", "Orders by status", labels=["status"])
        by_status_query = Order.select(Order.status, peewee.fn.COUNT(Order.id)).group_by(Order.status)
        counts = dict(tuple_rows(by_status_query))
        for status in lifecycle.STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        pending, age = _outbox_backlog()
        yield GaugeMetricFamily(
            "orderbus_outbox_pending", "Outbox rows not yet acknowledged by the broker", value=pending
        )
        yield GaugeMetricFamily(
            "orderbus_outbox_oldest_seconds", "Age of the oldest unpublished outbox row", value=age
        )
        dropped = CounterMetricFamily(
            "orderbus_locations_dropped",
            "Agents' position reports dropped by the location intake, by reason",
            labels=["reason"],
        )
        held = location.drops()
        for reason in location.DROP_REASONS:
            dropped.add_metric([reason], held.get(reason, 0))
        yield dropped
        online = Agent.select().where(Agent.presence == "online").count()
        yield GaugeMetricFamily(
            "orderbus_agents_online", "Agents whose last presence is online", value=online
        )
        yield GaugeMetricFamily(
            "orderbus_relay_active",
            "1 while a relay holds the relay lock (is active and publishing), else 0",
            value=int(bool(leader.active_relay())),
        )
        yield CounterMetricFamily(
            "orderbus_pod_code_refused",
            "Wrong delivery codes given at the door (proof of delivery)",
            value=PodCodeRefusal.select().count(),
        )
        sessions = leader.relay_sessions()
        if sessions is not None:  # PostgreSQL: standbys keep a session too
            yield GaugeMetricFamily(
                "orderbus_relays", "Relays connected to the database, active and standby", value=sessions
            )


def _allow_metrics() -> None:
    """The scraper's token (ORDERBUS_METRICS_TOKEN), or an admin's; anyone else is refused."""
    token = security.bearer_token()
    expected = current_app.config["ORDERBUS"].metrics_token
    if token and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if security.current_user().role != "admin":  # 401 without a valid token
        raise Forbidden("metrics are for admins and for the scraper holding ORDERBUS_METRICS_TOKEN")


@bp.get("/metrics", responses={200: METRICS_RESPONSE}, security=BEARER)
def metrics():
    """Prometheus text format. The bearer token is ORDERBUS_METRICS_TOKEN (for the scraper) or an
    admin's token; without either, 401."""
    _allow_metrics()
    registry = CollectorRegistry()
    registry.register(_DatabaseCollector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


# Not public: the view checks its own token, as the scraper's is not a user's token.
public("system.metrics")


@bp.get("/events", responses={200: schemas.EventPage}, security=BEARER)
@require("admin")
def events(query: schemas.EventQuery) -> Response:
    """The event log in commit order, for catch-up and for consumers that must not skip.

    Pass the last ``cursor`` you processed as ``after``. Writers are serialised
    (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the advisory writer lock in db.py),
    so ids are commit order and a cursor never skips a row that commits late.
    """
    rows = webhooks.event_log(query.after, query.limit)
    page = [{"cursor": r.id, "topic": r.topic, "payload": json.loads(r.payload)} for r in rows]
    return jsonify(events=page, next_cursor=page[-1]["cursor"] if page else query.after)


@bp.get("/lifecycle", responses={200: schemas.Lifecycle}, security=BEARER)
@require()
def get_lifecycle():
    """The lifecycle table, and the moves each role may make from each status."""
    return jsonify(
        statuses=list(lifecycle.STATUSES),
        terminal=sorted(lifecycle.TERMINAL),
        transitions={s: list(ts) for s, ts in lifecycle.TRANSITIONS.items()},
        moves_by_role={
            role: {s: lifecycle.moves_for(role, s) for s in lifecycle.STATUSES}
            for role in lifecycle.ROLE_MOVES
        },
        assignable=sorted(lifecycle.ASSIGNABLE),
        failure_reasons=list(lifecycle.FAILURE_REASONS),
    )
