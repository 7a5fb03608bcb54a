"""MQTT credentials the service issues: its own account, each agent's device, each admin dashboard."""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE mqtt_credentials (
        username VARCHAR(64) PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        secret_hash TEXT NOT NULL,
        agent_id VARCHAR(32) UNIQUE REFERENCES agents (id) ON DELETE CASCADE,
        user_id VARCHAR(32) REFERENCES users (id) ON DELETE CASCADE,
        token_hash VARCHAR(64) REFERENCES tokens (token_hash) ON DELETE CASCADE,
        created_at {ts} NOT NULL,
        expires_at {ts})""",
    "CREATE INDEX mqtt_credentials_expires ON mqtt_credentials (expires_at)",
    "CREATE INDEX mqtt_credentials_token ON mqtt_credentials (token_hash)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
