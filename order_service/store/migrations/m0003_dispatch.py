"""Dispatch: offers, ETA, delivery failure, late-order alerts, trusted presence, run-time settings.

Only adds columns, tables and indexes, so it does not depend on 0002 (MQTT
credentials, developed at the same time) and may be applied before or after it.
``DOUBLE PRECISION`` is valid on SQLite (REAL affinity) and PostgreSQL alike.
"""

from __future__ import annotations

import peewee

STATEMENTS = [
    "ALTER TABLE orders ADD COLUMN promised_at {ts}",
    "ALTER TABLE orders ADD COLUMN delivery_lat DOUBLE PRECISION",
    "ALTER TABLE orders ADD COLUMN delivery_lon DOUBLE PRECISION",
    "ALTER TABLE orders ADD COLUMN offer_agents TEXT",
    "ALTER TABLE orders ADD COLUMN offered_at {ts}",
    "ALTER TABLE orders ADD COLUMN offer_expires_at {ts}",
    "ALTER TABLE orders ADD COLUMN failure_reason VARCHAR(32)",
    "ALTER TABLE orders ADD COLUMN failure_note TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE orders ADD COLUMN delays TEXT NOT NULL DEFAULT '{{}}'",
    "CREATE INDEX orders_offer_expires ON orders (offer_expires_at) WHERE offer_expires_at IS NOT NULL",
    "ALTER TABLE agents ADD COLUMN last_seen_at {ts}",
    "ALTER TABLE agents ADD COLUMN presence_source VARCHAR(16)",
    # Auto-assignment's "longest idle": the newest history row that names the agent.
    "CREATE INDEX order_history_to_agent ON order_history (to_agent, at)",
    """CREATE TABLE order_offers (
        id {pk},
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        agent_id VARCHAR(32) NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
        state VARCHAR(16) NOT NULL
            CHECK (state IN ('pending', 'accepted', 'declined', 'expired', 'taken', 'withdrawn')),
        offered_at {ts} NOT NULL,
        expires_at {ts} NOT NULL,
        answered_at {ts},
        reason TEXT NOT NULL DEFAULT '')""",
    # At most one pending offer per order and agent.
    "CREATE UNIQUE INDEX order_offers_pending ON order_offers (order_id, agent_id) WHERE state = 'pending'",
    "CREATE INDEX order_offers_agent ON order_offers (agent_id, state)",
    """CREATE TABLE order_alerts (
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        rule VARCHAR(32) NOT NULL,
        fired_at {ts} NOT NULL,
        PRIMARY KEY (order_id, rule))""",
    """CREATE TABLE dispatch_settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        overrides TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at {ts} NOT NULL,
        updated_by VARCHAR(32))""",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
