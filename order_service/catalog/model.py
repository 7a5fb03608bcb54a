"""The catalog's tables (migration 0008): categories, items, options and the version row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

import peewee as pw

from order_service.store.models import BaseModel, utcnow


class Category(BaseModel):
    items: Iterable[Item]  # backref of Item.category
    id = pw.CharField(primary_key=True, max_length=32)
    name = pw.CharField(max_length=200)
    position = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "catalog_categories"

    @classmethod
    def in_order(cls) -> pw.ModelSelect[Self]:
        return cls.select().order_by(cls.position, cls.created_at, cls.id)


class Item(BaseModel):
    options: Iterable[Option]  # backref of Option.item
    id = pw.CharField(primary_key=True, max_length=32)
    category = pw.ForeignKeyField(Category, backref="items", on_delete="RESTRICT")
    category_id: str
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    price_cents = pw.BigIntegerField()
    available = pw.BooleanField(default=True)
    position = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "catalog_items"

    @classmethod
    def in_order(cls) -> pw.ModelSelect[Self]:
        return cls.select().order_by(cls.position, cls.created_at, cls.id)


class Option(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    item = pw.ForeignKeyField(Item, backref="options", on_delete="CASCADE")
    item_id: str
    name = pw.CharField(max_length=200)
    price_delta_cents = pw.BigIntegerField()
    position = pw.IntegerField(default=0)

    class Meta:
        table_name = "catalog_options"


class CatalogState(BaseModel):
    """The one row: the catalog's version, raised by every change, and when it changed."""

    id = pw.IntegerField(primary_key=True)
    version = pw.IntegerField()
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "catalog_state"
