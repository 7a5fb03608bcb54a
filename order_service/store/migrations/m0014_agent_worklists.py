"""Each agent's worklist kept ready to publish (issue 20, B5): per agent, for its
``worklist_version``, the orders and the offers as an index of sort keys and the orders'
JSON (``orders/worklists.py``), so that a change of one order updates its line instead of
rebuilding every order of the worklist. Starts empty: an agent's first change after it
rebuilds that agent's row from the orders."""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE agent_worklists (
        agent_id VARCHAR(32) PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        orders_index TEXT NOT NULL,
        orders TEXT NOT NULL,
        offers_index TEXT NOT NULL,
        offers TEXT NOT NULL)""",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
