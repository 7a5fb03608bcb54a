"""Migration 0008 (catalog, order numbers) on a database that already holds orders."""

from __future__ import annotations

import sqlite3

import pytest

from order_service.catalog import service as catalog
from order_service.orders.events import order_dict
from order_service.orders.service import NewOrder, create_order
from order_service.store.db import db, init_db
from order_service.store.migrations import SQLITE_TYPES, applied_versions, discover, migrate
from order_service.store.models import Order, User


@pytest.mark.sqlite_only
def test_0008_keeps_old_orders_lines_and_numbers_new_ones(tmp_path):
    """Orders placed before 0008 keep their lines as they were (no item id, no options) and
    have no number; the catalog starts empty at version 0; the next order is #1."""
    path = tmp_path / "o.db"
    database = init_db(f"sqlite:///{path}")
    with database.connection_context():
        applied_versions(database, SQLITE_TYPES)
        for m in discover():
            if m.version < 8:
                with database.atomic():
                    m.up(database, SQLITE_TYPES)
                    database.execute_sql(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (?, ?, '2026-01-01')",
                        (m.version, m.name),
                    )
    with sqlite3.connect(path) as conn:
        for n in (1, 2):
            conn.execute(
                "INSERT INTO orders (id, version, status, customer_name, customer_phone, customer_address,"
                " notes, currency, total_cents, status_times, created_at, updated_at, delays) VALUES"
                f" ('ord_00000000000{n}', 1, 'placed', 'Ann', '+1 555 0100', '1 Main St', '', 'USD', 2598,"
                " '{\"placed\": \"2026-01-01T00:00:00.000Z\"}', '2026-01-01 00:00:00',"
                " '2026-01-01 00:00:00', '{}')"
            )
            conn.execute(
                "INSERT INTO order_items (order_id, position, name, quantity, unit_price_cents) VALUES"
                f" ('ord_00000000000{n}', 0, 'Margherita', 2, 1299)"
            )
    applied = migrate(database, log=lambda _m: None)
    assert applied[0] == 8 and applied == sorted(applied), applied  # 0008 first, then any later ones
    with db.connection_context():
        old = order_dict(Order.get_by_id("ord_000000000001"))
        assert old["number"] is None
        assert old["items"] == [{"name": "Margherita", "quantity": 2, "unit_price_cents": 1299}]
        assert old["total_cents"] == 2598 and old["currency"] == "USD"
        assert catalog.catalog_dict("EUR")["version"] == 0
        admin = User.create(id="usr_000000000001", username="admin", password_hash="x", role="admin")
        custom = [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}]
        new, _ = create_order(
            admin, NewOrder(customer={"name": "Bo", "phone": "+1 555 0101", "address": "2 St"}, items=custom)
        )
        assert new.number == 1
        assert order_dict(Order.get_by_id(new.id))["number"] == 1
