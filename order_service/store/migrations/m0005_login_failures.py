"""Failed logins, for throttling password guessing on POST /auth/token."""

from __future__ import annotations

import peewee

STATEMENTS = [
    """CREATE TABLE login_failures (
        id {pk},
        username VARCHAR(64) NOT NULL,
        at {ts} NOT NULL)""",
    "CREATE INDEX login_failures_username_at ON login_failures (username, at)",
]


def up(db: peewee.Database, t: dict[str, str]) -> None:
    for statement in STATEMENTS:
        db.execute_sql(statement.format(**t))
