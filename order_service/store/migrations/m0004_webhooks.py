"""Webhooks (issue #6): endpoints, one delivery row per (endpoint, event), every attempt, the cursor.

The webhook worker (``python -m order_service.webhooks``) follows the event log with the
cursor in ``webhook_cursor`` and fans each event out into ``webhook_deliveries`` in
the same transaction that advances the cursor, so a restart neither skips nor
re-queues an event. Only adds tables: independent of 0002 and 0003.
"""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE webhook_endpoints (
        id VARCHAR(32) PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        events TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        state VARCHAR(16) NOT NULL CHECK (state IN ('active', 'failing')),
        start_cursor {bigint} NOT NULL,
        created_at {ts} NOT NULL,
        created_by VARCHAR(32),
        failing_since {ts})""",
    """CREATE TABLE webhook_deliveries (
        id {bigpk},
        endpoint_id VARCHAR(32) NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
        cursor {bigint} NOT NULL,
        event_id VARCHAR(40) NOT NULL,
        event VARCHAR(40) NOT NULL,
        payload TEXT NOT NULL,
        state VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at {ts} NOT NULL,
        next_attempt_at {ts} NOT NULL,
        finished_at {ts})""",
    # One delivery per endpoint and event: the fan-out may be repeated safely.
    "CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (endpoint_id, event_id)",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)",
    """CREATE TABLE webhook_attempts (
        id {bigpk},
        delivery_id {bigint} NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        endpoint_id VARCHAR(32) NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        at {ts} NOT NULL,
        status_code INTEGER,
        error TEXT NOT NULL DEFAULT '',
        duration_ms INTEGER NOT NULL)""",
    "CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id)",
    """CREATE TABLE webhook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cursor {bigint} NOT NULL,
        updated_at {ts} NOT NULL)""",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
