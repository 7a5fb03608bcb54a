"""Proof of delivery (issue 19, item 5): each order's 4-digit ``delivery_code`` (shown to
its customer only), whether the code was checked at delivery, the courier's photo (its
type and time; the file lives in ``<data_dir>/photos/``) and when the proof was taken;
one row per wrong code given, counted by /metrics and bounding guesses per order.

Orders placed before this migration have no code: their delivery asks for none.
"""

from __future__ import annotations

import peewee

STATEMENTS = [
    "ALTER TABLE orders ADD COLUMN delivery_code VARCHAR(4)",
    "ALTER TABLE orders ADD COLUMN pod_code_checked {bool} NOT NULL DEFAULT {false}",
    "ALTER TABLE orders ADD COLUMN pod_photo_type VARCHAR(16)",
    "ALTER TABLE orders ADD COLUMN pod_photo_at {ts}",
    "ALTER TABLE orders ADD COLUMN pod_at {ts}",
    """CREATE TABLE pod_code_refusals (
        id {pk},
        order_id VARCHAR(32) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        agent_id VARCHAR(32),
        at {ts} NOT NULL)""",
    "CREATE INDEX pod_code_refusals_order ON pod_code_refusals (order_id)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    false = "0" if isinstance(db, peewee.SqliteDatabase) else "FALSE"
    for statement in STATEMENTS:
        db.execute_sql(statement.format(false=false, **t))
