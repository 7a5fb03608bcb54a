"""Web Push subscriptions of the agents' devices (issue 19 item 6): one row per device,
the push service's endpoint and the browser's keys for encrypting to it (RFC 8291). An
endpoint belongs to one browser, so it is unique: a phone handed to another courier moves
its subscription to the new agent. Deleting an agent deletes its subscriptions."""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE push_subscriptions (
        id VARCHAR(32) PRIMARY KEY,
        agent_id VARCHAR(32) NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
        device_id VARCHAR(64) NOT NULL,
        endpoint VARCHAR(1024) NOT NULL,
        p256dh VARCHAR(128) NOT NULL,
        auth VARCHAR(64) NOT NULL,
        created_at {ts} NOT NULL,
        updated_at {ts} NOT NULL,
        last_sent_at {ts},
        last_status INTEGER)""",
    "CREATE UNIQUE INDEX push_subscriptions_agent_device ON push_subscriptions (agent_id, device_id)",
    "CREATE UNIQUE INDEX push_subscriptions_endpoint ON push_subscriptions (endpoint)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
