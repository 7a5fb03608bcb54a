"""The hot path's statements built once (order_service/store/inserts.py) give what peewee gives.

They skip ``Field.db_value`` for values it would return unchanged and make instances of rows
without peewee's per-field ``setattr``: both must be invisible. Every field of every model,
with values of every kind a field may be handed, is converted as ``db_value`` converts it;
a row read by ``Select`` is the instance peewee's own query makes of it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import peewee

from order_service.store.db import db
from order_service.store.inserts import RowReader, Select, as_is, read_as_is
from order_service.store.models import BaseModel, Order, OrderItem, User

A_TIME = datetime(2026, 12, 7, 13, 0, 1, 5)
VALUES = [None, "text", "42", b"bytes", 7, 0, True, False, 2.5, Decimal("1.5"), A_TIME]


def _models() -> list[type[peewee.Model]]:
    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        found.append(model)
        todo += model.__subclasses__()
    return found


def test_a_value_skipped_is_one_db_value_returns_unchanged():
    checked = 0
    for model in _models():
        for field in model._meta.sorted_fields:
            kinds = as_is(field)  # what the statements give the driver as it is
            for value in VALUES:
                try:
                    expected = field.db_value(value)
                except (TypeError, ValueError, AttributeError):
                    continue  # a value this field refuses: it is never handed one
                got = value if type(value) in kinds else field.db_value(value)
                assert got == expected and type(got) is type(expected), (model.__name__, field.name, value)
                checked += 1
    assert checked > 500  # positive control: the loop saw the models and their fields
    assert as_is(Order._meta.fields["status"]) and as_is(Order._meta.fields["agent"])  # skips some
    assert as_is(Order._meta.fields["status_times"]) == ()  # a JSON field always converts


def test_a_value_read_as_it_is_is_one_python_value_returns_unchanged():
    """What a driver may answer for a column (SQLite: text, 0/1, floats; PostgreSQL:
    datetimes, booleans) becomes what ``python_value`` makes of it, each field of each model."""
    answers = [*VALUES, "2026-12-07 13:00:01.000005", "2026-12-07 13:00:01", 1, '{"a": 1}', "[1, 2]"]
    checked = 0
    for model in _models():
        for field in model._meta.sorted_fields:
            read = RowReader([field])
            for value in answers:
                try:
                    expected = field.python_value(value)
                except (TypeError, ValueError, AttributeError):
                    continue  # not an answer a driver gives for this column
                got = read([value])[field.name]
                assert got == expected and type(got) is type(expected), (model.__name__, field.name, value)
                checked += 1
    assert checked > 500  # positive control
    assert read_as_is(User._meta.fields["username"]) and read_as_is(Order._meta.fields["agent"])
    assert int not in read_as_is(User._meta.fields["active"])  # SQLite's 1 becomes True
    assert read_as_is(Order._meta.fields["status_times"]) == ()  # JSON always converts


def test_a_row_read_is_the_instance_peewee_makes(app, admin, client):
    body = {
        "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
        "items": [{"name": "Tea", "quantity": 2, "unit_price_cents": 300}],
    }
    order_id = client.post("/api/v1/orders", json=body, headers=admin.headers).json["id"]
    with db.connection_context():
        for model, key in ((Order, order_id), (User, admin.user_id)):
            ours, theirs = Select(model, "id").one(key), model.get_by_id(key)
            assert ours.__data__ == theirs.__data__
            assert ours._dirty == theirs._dirty == set()
            assert ours.__rel__ == theirs.__rel__ == {}
            assert not ours.is_dirty()


def test_a_row_inserted_is_the_instance_peewee_reads_back(app, admin):
    """A new order and its lines, as the write path returns them without reading them
    back (``Insert.instances``), hold what peewee reads from the database: the defaults
    the insert filled in included."""
    from order_service.orders.service import NewOrder, create_order

    new = NewOrder(
        customer={"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
        items=[
            {"name": "Tea", "quantity": 2, "unit_price_cents": 300},
            {"name": "Cake", "quantity": 1, "unit_price_cents": 450},
        ],
        delivery_location={"lat": 52.5, "lon": 13.4},
    )
    with db.connection_context():
        user = User.get_by_id(admin.user_id)
        order, created = create_order(user, new)
        assert created
        stored = Order.get_by_id(order.id)
        # A column neither given nor defaulted is absent, as from Model(**row): it reads None.
        assert _columns(order) == _columns(stored)
        assert not order.is_dirty()
        lines = list(OrderItem.select().where(OrderItem.order == order.id).order_by(OrderItem.position))
        # A line's id is the database's (a multi-row insert does not say it): not kept.
        assert [{**_columns(line), "id": None} for line in lines] == [_columns(line) for line in order.items]
        assert [line.name for line in order.items] == ["Tea", "Cake"]  # positive control


def _columns(instance: peewee.Model) -> dict:
    return {name: instance.__data__.get(name) for name in instance._meta.fields}
