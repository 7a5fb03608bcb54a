"""Human order numbers: 1, 2, 3... per business day, shown as ``#12``; ids stay the API's keys.

The business day is the calendar date in ``ORDERBUS_BUSINESS_TIMEZONE`` (default UTC) when
the order is placed. One counter row per day (``order_numbers``) is raised by a single
upsert in the order's own transaction: two orders never get the same number on SQLite or
on PostgreSQL (writers take turns, and the statement is atomic on its own besides), and
an order that is refused or rolled back gives its number back, so a day has no gaps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from order_service.store.db import db


def business_day(at: datetime, zone: ZoneInfo) -> str:
    """The business day (YYYY-MM-DD) of ``at``, a naive UTC time as the database keeps them."""
    return at.replace(tzinfo=UTC).astimezone(zone).date().isoformat()


def next_number(day: str) -> int:
    """The next number of ``day``; call it inside the order's transaction."""
    p = db.param
    cursor = db.execute_sql(
        "INSERT INTO order_numbers (business_day, last_number) VALUES "
        f"({p}, 1) ON CONFLICT (business_day) DO UPDATE SET last_number = order_numbers.last_number + 1 "
        "RETURNING last_number",
        (day,),
    )
    return int(cursor.fetchone()[0])
