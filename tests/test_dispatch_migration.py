"""Migration 0003 (dispatch) on an existing database, and readiness with a gap in the numbering."""

from __future__ import annotations

import sqlite3

import pytest

from order_service.orders.events import order_dict
from order_service.store.db import db, init_db
from order_service.store.migrations import SQLITE_TYPES, applied_versions, discover, migrate
from order_service.store.models import Order


@pytest.mark.sqlite_only
def test_0003_upgrades_a_database_with_orders(tmp_path):
    """A database at 0001 with an order keeps it; after 0003 the order reads with empty dispatch fields."""
    path = tmp_path / "o.db"
    database = init_db(f"sqlite:///{path}")
    first = next(m for m in discover() if m.version == 1)
    with database.connection_context():
        applied_versions(database, SQLITE_TYPES)
        first.up(database, SQLITE_TYPES)
        database.execute_sql(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'initial', '2026-01-01')"
        )
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO orders (id, version, status, customer_name, customer_phone, customer_address,"
            " notes, currency, total_cents, status_times, created_at, updated_at) VALUES"
            " ('ord_0123456789ab', 1, 'placed', 'Ann', '+1 555 0100', '1 Main St', '', 'USD', 0,"
            " '{\"placed\": \"2026-01-01T00:00:00.000Z\"}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    applied = migrate(database, log=lambda _m: None)
    assert 3 in applied and 1 not in applied
    with db.connection_context():
        order = order_dict(Order.get_by_id("ord_0123456789ab"))
    assert order["status"] == "placed"
    assert (order["offer"], order["failure"], order["promised_at"], order["delays"]) == (None, None, None, {})


def test_readyz_is_503_while_an_older_migration_is_missing(client):
    """With the newest migration applied but an older one not (parallel branches merged), the
    service is not ready: readiness asks for `migrate`, which applies the missing one."""
    assert client.get("/api/v1/readyz").status_code == 200
    with db.connection_context():
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 1")
    response = client.get("/api/v1/readyz")
    assert response.status_code == 503
    assert response.json["schema_version"] == 0 and "migrate" in response.json["detail"]
