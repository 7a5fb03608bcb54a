"""Failed logins by client address too: the login throttle slows an address that keeps
failing for a username, not the username itself (``accounts/users.py``). Failures recorded
before it have no address ('') and age out of the window like the others."""

from __future__ import annotations

import peewee

STATEMENTS = [
    "ALTER TABLE login_failures ADD COLUMN address VARCHAR(64) NOT NULL DEFAULT ''",
    "CREATE INDEX login_failures_username_address_at ON login_failures (username, address, at)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
