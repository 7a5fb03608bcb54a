"""The catalog (issue 18): categories, items and their options, and one row holding the
catalog's version; order lines gain the catalog item they were priced from and the names
of its options chosen (a snapshot: the line keeps its name and unit price whatever the
catalog does later); orders gain their human ``number``, sequential per business day,
handed out by one counter row per day in the order's own transaction.

Old orders keep their lines as they were (no item id, no options) and have no number.
"""

from __future__ import annotations

from datetime import UTC, datetime

import peewee

STATEMENTS = [
    """CREATE TABLE catalog_categories (
        id VARCHAR(32) PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        position INTEGER NOT NULL DEFAULT 0,
        created_at {ts} NOT NULL,
        updated_at {ts} NOT NULL)""",
    """CREATE TABLE catalog_items (
        id VARCHAR(32) PRIMARY KEY,
        category_id VARCHAR(32) NOT NULL REFERENCES catalog_categories (id) ON DELETE RESTRICT,
        name VARCHAR(200) NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        price_cents {bigint} NOT NULL CHECK (price_cents >= 0),
        available {bool} NOT NULL,
        position INTEGER NOT NULL DEFAULT 0,
        created_at {ts} NOT NULL,
        updated_at {ts} NOT NULL)""",
    "CREATE INDEX catalog_items_category ON catalog_items (category_id, position)",
    """CREATE TABLE catalog_options (
        id VARCHAR(32) PRIMARY KEY,
        item_id VARCHAR(32) NOT NULL REFERENCES catalog_items (id) ON DELETE CASCADE,
        name VARCHAR(200) NOT NULL,
        price_delta_cents {bigint} NOT NULL,
        position INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX catalog_options_item ON catalog_options (item_id, position)",
    """CREATE TABLE catalog_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        updated_at {ts} NOT NULL)""",
    # No foreign key to catalog_items: an item may be deleted, its orders keep their lines.
    "ALTER TABLE order_items ADD COLUMN item_id VARCHAR(32)",
    "ALTER TABLE order_items ADD COLUMN options TEXT",
    "ALTER TABLE orders ADD COLUMN number INTEGER",
    "ALTER TABLE orders ADD COLUMN business_day VARCHAR(10)",
    "CREATE UNIQUE INDEX orders_business_day_number ON orders (business_day, number)",
    """CREATE TABLE order_numbers (
        business_day VARCHAR(10) PRIMARY KEY,
        last_number INTEGER NOT NULL)""",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
    db.execute_sql(
        f"INSERT INTO catalog_state (id, version, updated_at) VALUES (1, 0, {db.param})",
        (datetime.now(UTC).replace(tzinfo=None),),
    )
