"""Live location (issue 19): each agent's latest position, the trail of every order while
it is picked up, and the count of position reports dropped, by reason (for /metrics).

Only adds tables. ``agent_locations`` holds one row per agent that reported a position and
has not gone offline since; ``order_trail`` is bounded per order by the writer
(``ORDERBUS_LOCATION_TRAIL_POINTS``); ``tst`` is the device's own unix time in seconds;
``order_location_seq`` counts the customer's feed messages a position alone caused.
"""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE agent_locations (
        agent_id VARCHAR(32) PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
        lat DOUBLE PRECISION NOT NULL,
        lon DOUBLE PRECISION NOT NULL,
        acc DOUBLE PRECISION,
        tst {bigint} NOT NULL,
        batt INTEGER,
        speed DOUBLE PRECISION,
        heading DOUBLE PRECISION,
        received_at {ts} NOT NULL,
        stale {bool} NOT NULL)""",
    """CREATE TABLE order_trail (
        id {bigpk},
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        lat DOUBLE PRECISION NOT NULL,
        lon DOUBLE PRECISION NOT NULL,
        tst {bigint} NOT NULL)""",
    "CREATE INDEX order_trail_order ON order_trail (order_id, id)",
    # How many times the customer's feed was rewritten for a change of the courier's
    # position alone (no new order version): part of the feed's version (orders/feed.py).
    """CREATE TABLE order_location_seq (
        order_id VARCHAR(32) PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
        seq {bigint} NOT NULL)""",
    """CREATE TABLE location_drops (
        reason VARCHAR(32) PRIMARY KEY,
        count {bigint} NOT NULL)""",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
