"""Users, tokens, agents, orders, items, history, outbox and idempotency keys."""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE users (
        id VARCHAR(32) PRIMARY KEY,
        username VARCHAR(64) NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role VARCHAR(16) NOT NULL CHECK (role IN ('admin', 'agent', 'customer')),
        display_name VARCHAR(200) NOT NULL DEFAULT '',
        active {bool} NOT NULL,
        created_at {ts} NOT NULL)""",
    """CREATE TABLE tokens (
        token_hash VARCHAR(64) PRIMARY KEY,
        user_id VARCHAR(32) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at {ts} NOT NULL,
        expires_at {ts} NOT NULL)""",
    "CREATE INDEX tokens_user_id ON tokens (user_id)",
    """CREATE TABLE agents (
        id VARCHAR(32) PRIMARY KEY,
        user_id VARCHAR(32) UNIQUE REFERENCES users (id) ON DELETE SET NULL,
        name VARCHAR(200) NOT NULL,
        phone VARCHAR(40) NOT NULL DEFAULT '',
        active {bool} NOT NULL,
        worklist_version INTEGER NOT NULL DEFAULT 0,
        presence VARCHAR(16),
        presence_at {ts},
        created_at {ts} NOT NULL,
        updated_at {ts} NOT NULL)""",
    """CREATE TABLE orders (
        id VARCHAR(32) PRIMARY KEY,
        version INTEGER NOT NULL,
        status VARCHAR(16) NOT NULL,
        agent_id VARCHAR(32) REFERENCES agents (id) ON DELETE RESTRICT,
        owner_id VARCHAR(32) REFERENCES users (id) ON DELETE SET NULL,
        customer_name VARCHAR(200) NOT NULL,
        customer_phone VARCHAR(40) NOT NULL,
        customer_address VARCHAR(500) NOT NULL,
        notes TEXT NOT NULL DEFAULT '',
        currency VARCHAR(3) NOT NULL,
        total_cents {bigint} NOT NULL,
        eta {ts},
        status_times TEXT NOT NULL,
        terminal_at {ts},
        retained_cleared_at {ts},
        created_at {ts} NOT NULL,
        updated_at {ts} NOT NULL)""",
    "CREATE INDEX orders_created ON orders (created_at, id)",
    "CREATE INDEX orders_status ON orders (status)",
    "CREATE INDEX orders_agent ON orders (agent_id, status)",
    "CREATE INDEX orders_owner ON orders (owner_id, created_at)",
    "CREATE INDEX orders_terminal ON orders (terminal_at) WHERE retained_cleared_at IS NULL",
    """CREATE TABLE order_items (
        id {pk},
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name VARCHAR(200) NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        unit_price_cents {bigint} NOT NULL CHECK (unit_price_cents >= 0))""",
    "CREATE INDEX order_items_order ON order_items (order_id, position)",
    """CREATE TABLE order_history (
        id {pk},
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        event VARCHAR(40) NOT NULL,
        at {ts} NOT NULL,
        actor_id VARCHAR(32) REFERENCES users (id) ON DELETE SET NULL,
        actor_role VARCHAR(16) NOT NULL,
        from_status VARCHAR(16),
        to_status VARCHAR(16),
        from_agent VARCHAR(32),
        to_agent VARCHAR(32),
        reason TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX order_history_order ON order_history (order_id, version)",
    """CREATE TABLE outbox (
        id {bigpk},
        event_id VARCHAR(40) NOT NULL,
        event VARCHAR(40) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        topic VARCHAR(200) NOT NULL,
        payload TEXT NOT NULL,
        order_id VARCHAR(32),
        agent_id VARCHAR(32),
        created_at {ts} NOT NULL,
        published_at {ts})""",
    "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
    "CREATE INDEX outbox_topic ON outbox (topic, id)",
    "CREATE INDEX outbox_order ON outbox (order_id, kind, id)",
    "CREATE INDEX outbox_agent ON outbox (agent_id, kind, id)",
    """CREATE TABLE idempotency_keys (
        id {pk},
        user_id VARCHAR(32) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        key VARCHAR(200) NOT NULL,
        request_hash VARCHAR(64) NOT NULL,
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        created_at {ts} NOT NULL)""",
    "CREATE UNIQUE INDEX idempotency_keys_user_key ON idempotency_keys (user_id, key)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
