"""Statements of the hot write path with their SQL built once, not per statement.

peewee builds the SQL text of every query anew (about a third of the CPU of
``POST /orders`` went into that, and more of a status change's). :class:`Insert` writes
rows of one model with the same columns peewee would use (the given ones plus every
field with a default) and the same value conversion (``Field.db_value``);
:class:`Select` reads whole rows by a key into model instances, as peewee's row loader
builds them (``Field.python_value``); :class:`Update` saves a whole instance as
``Model.save()`` does. Each builds its text once per database. On PostgreSQL the inserts
and saves go to the server with the transaction's next statement, in one round trip
(``db.write``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import peewee

from order_service.store.db import db, write

# A value of one of these exact types goes to the driver as it is: its field's ``db_value``
# would return it unchanged (peewee adapts a str of a string field, an int of an integer
# field, ... to itself, and None to None). Every other value, and every value of a field
# class not named here (``JSONField``...), goes through ``db_value``. A sixth of the CPU
# of writing a new order was those calls (issue 20).
_NONE = type(None)
_AS_IS: dict[type[peewee.Field], tuple[type, ...]] = {
    peewee.CharField: (str, _NONE),
    peewee.TextField: (str, _NONE),
    peewee.IntegerField: (int, _NONE),
    peewee.BigIntegerField: (int, _NONE),
    peewee.SmallIntegerField: (int, _NONE),
    peewee.AutoField: (int, _NONE),
    peewee.BigAutoField: (int, _NONE),
    peewee.BooleanField: (bool, _NONE),
    peewee.FloatField: (float, _NONE),
    peewee.DoubleField: (float, _NONE),
    peewee.DateTimeField: (datetime, _NONE),
}


def as_is(field: peewee.Field) -> tuple[type, ...]:
    """The exact types whose values ``field.db_value`` returns unchanged (see ``_AS_IS``)."""
    if isinstance(field, peewee.ForeignKeyField):
        return as_is(field.rel_field)  # a key value (not a model instance) goes to the key's field
    return _AS_IS.get(type(field), ())


# A value of one of these exact types, as the driver returns it, is what the field's
# ``python_value`` returns (a str of a string field, an int of an integer field, None...);
# anything else (SQLite's text of a time, its 0/1 of a boolean, JSON) goes through it.
_READ_AS_IS: dict[type[peewee.Field], tuple[type, ...]] = {
    **_AS_IS,
    peewee.BooleanField: (bool, _NONE),  # SQLite answers 0/1: those convert
}


def read_as_is(field: peewee.Field) -> tuple[type, ...]:
    """The exact types whose values ``field.python_value`` returns unchanged."""
    if isinstance(field, peewee.ForeignKeyField):
        return read_as_is(field.rel_field)
    return _READ_AS_IS.get(type(field), ())


class RowReader:
    """Rows of ``fields`` (as the driver returns them) into dicts of python values by field
    name, as peewee's row loader converts them (``python_value``), skipping the calls that
    would return a value unchanged."""

    def __init__(self, fields: Sequence[peewee.Field]) -> None:
        self._plan = [(f.name, read_as_is(f), f.python_value) for f in fields]

    def __call__(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: value if type(value) in kinds else python_value(value)
            for (name, kinds, python_value), value in zip(self._plan, row, strict=True)
        }


def loaded(model: type[peewee.Model], data: dict[str, Any]) -> Any:
    """A model instance of a row already converted (``python_value``), as peewee's row loader
    makes it (no defaults, nothing dirty) without a ``setattr`` per field."""
    instance = model.__new__(model)
    instance.__data__ = data
    instance._dirty = set()  # type: ignore[attr-defined]  # peewee sets it in __init__; its stubs omit it
    instance.__rel__ = {}
    return instance


class Insert:
    """``INSERT INTO <model> (<columns>) VALUES (...)``, rows given as dicts of field names."""

    def __init__(self, model: type[peewee.Model], names: Iterable[str]) -> None:
        meta = model._meta
        given = set(names)
        unknown = given - set(meta.fields)
        if unknown:
            raise ValueError(f"{model.__name__} has no field {sorted(unknown)}")
        self.model = model
        self.fields = [f for f in meta.sorted_fields if f.name in given or f in meta.defaults]
        self.defaults = {f.name: meta.defaults[f] for f in self.fields if f.name not in given}
        self._plan = [(f.name, as_is(f), f.db_value) for f in self.fields]
        self._sql: dict[int, tuple[peewee.Database, str, str]] = {}

    def _text(self, database: peewee.Database) -> tuple[str, str]:
        cached = self._sql.get(id(database))
        if cached is None or cached[0] is not database:
            quote = database.quote
            table = self.model._meta.table_name.join(quote)
            columns = ", ".join(f.column_name.join(quote) for f in self.fields)
            row = "(" + ", ".join([database.param] * len(self.fields)) + ")"
            cached = (database, f"INSERT INTO {table} ({columns}) VALUES ", row)
            self._sql[id(database)] = cached
        return cached[1], cached[2]

    def _values(self, row: Mapping[str, Any], filled: dict[str, Any] | None = None) -> list[Any]:
        """The row's parameters; each default used is also put in ``filled`` when given."""
        values = []
        for name, kinds, db_value in self._plan:
            if name in row:
                value = row[name]
            else:
                value = self.defaults[name]
                if callable(value):
                    value = value()
                if filled is not None:
                    filled[name] = value
            values.append(value if type(value) in kinds else db_value(value))
        return values

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (one statement); the caller holds the transaction."""
        params: list[Any] = []
        for row in rows:
            params += self._values(row)
        self.write(len(rows), params)

    def instances(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert ``rows`` (one statement) and return them as model instances, defaults
        included, as ``Model(**row)`` would hold them (nothing dirty: they are saved)."""
        made, params = self.prepare(rows)
        self.write(len(made), params)
        return made

    def prepare(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
        """``rows`` as :meth:`instances` returns them and the parameters that write them
        (:meth:`write`), made without the database: before the transaction that writes them."""
        made = []
        params: list[Any] = []
        for row in rows:
            data = dict(row)
            params += self._values(row, data)
            made.append(loaded(self.model, data))
        return made, params

    def write(self, count: int, params: list[Any]) -> None:
        """One statement of ``count`` rows (none: nothing)."""
        if count:
            head, row_text = self._text(db.obj)
            write(head + ", ".join([row_text] * count), params)


def _quoted(database: peewee.Database, name: str) -> str:
    return name.join(database.quote)


class Select:
    """``SELECT <every column> FROM <model> WHERE <key columns> = ...``: model instances.

    ``order_by`` names a field; ``for_update`` locks the rows on PostgreSQL (SQLite's
    ``BEGIN IMMEDIATE`` already holds the whole database)."""

    def __init__(
        self, model: type[peewee.Model], *keys: str, order_by: str | None = None, for_update: bool = False
    ) -> None:
        meta = model._meta
        self.model = model
        self.fields = list(meta.sorted_fields)
        self.keys = [meta.fields[name] for name in keys]
        self.order_by = meta.fields[order_by] if order_by else None
        self.for_update = for_update
        self._read = RowReader(self.fields)
        self._sql: tuple[peewee.Database, str] | None = None

    def _text(self, database: peewee.Database) -> str:
        if self._sql is None or self._sql[0] is not database:
            columns = ", ".join(_quoted(database, f.column_name) for f in self.fields)
            where = " AND ".join(f"{_quoted(database, f.column_name)} = {database.param}" for f in self.keys)
            sql = f"SELECT {columns} FROM {_quoted(database, self.model._meta.table_name)} WHERE {where}"
            if self.order_by is not None:
                sql += f" ORDER BY {_quoted(database, self.order_by.column_name)}"
            if self.for_update and not isinstance(database, peewee.SqliteDatabase):
                sql += " FOR UPDATE"
            self._sql = (database, sql)
        return self._sql[1]

    def all(self, *values: Any) -> list[Any]:
        params = [key.db_value(value) for key, value in zip(self.keys, values, strict=True)]
        cursor = db.execute_sql(self._text(db.obj), params)
        read, model = self._read, self.model
        return [loaded(model, read(row)) for row in cursor.fetchall()]

    def one(self, *values: Any) -> Any:
        """The row with these key values, or None."""
        found = self.all(*values)
        return found[0] if found else None


class Update:
    """``UPDATE <model> SET <every other column> WHERE <primary key> = ...``: an instance read
    whole (:class:`Select`) saved whole, as ``Model.save()`` saves it."""

    def __init__(self, model: type[peewee.Model]) -> None:
        meta = model._meta
        self.model = model
        key = meta.primary_key
        assert isinstance(key, peewee.Field), f"{model.__name__} has no single primary key"
        self.key = key
        self.fields = [f for f in meta.sorted_fields if f is not self.key]
        self._plan = [(f.name, as_is(f), f.db_value) for f in self.fields]
        self._sql: tuple[peewee.Database, str] | None = None

    def _text(self, database: peewee.Database) -> str:
        if self._sql is None or self._sql[0] is not database:
            p = database.param
            assigned = ", ".join(f"{_quoted(database, f.column_name)} = {p}" for f in self.fields)
            table = _quoted(database, self.model._meta.table_name)
            key = _quoted(database, self.key.column_name)
            self._sql = (database, f"UPDATE {table} SET {assigned} WHERE {key} = {database.param}")
        return self._sql[1]

    def save(self, instance: peewee.Model) -> None:
        data = instance.__data__
        params = []
        for name, kinds, db_value in self._plan:
            if name not in data:  # not read whole: peewee saves the columns it has
                instance.save()
                return
            value = data[name]
            params.append(value if type(value) in kinds else db_value(value))
        params.append(self.key.db_value(data[self.key.name]))
        write(self._text(db.obj), params)
        instance._dirty.clear()  # type: ignore[attr-defined]
