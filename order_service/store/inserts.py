"""INSERTs of the hot write path with their SQL built once, not per statement.

peewee builds the SQL text of every query anew (about a third of the CPU of
``POST /orders`` went into that). :class:`Insert` writes rows of one model with
the same columns peewee would use (the given ones plus every field with a
default) and the same value conversion (``Field.db_value``), its text built once
per database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import peewee

from order_service.store.db import db


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

    def _values(self, row: Mapping[str, Any]) -> list[Any]:
        values = []
        for field in self.fields:
            if field.name in row:
                value = row[field.name]
            else:
                value = self.defaults[field.name]
                if callable(value):
                    value = value()
            values.append(field.db_value(value))
        return values

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (one statement); the caller holds the transaction."""
        if not rows:
            return
        head, row_text = self._text(db.obj)
        params: list[Any] = []
        for row in rows:
            params += self._values(row)
        db.execute_sql(head + ", ".join([row_text] * len(rows)), params)
