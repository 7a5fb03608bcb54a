"""The catalog as everyone reads it, and the admin's changes to it.

Every change is one transaction that writes the change, raises the catalog's version and
writes an outbox row carrying the whole catalog (the body of ``GET /api/v1/catalog``) for
the retained topic ``catalog``: the shop shows "sold out" the moment an item is switched
off, and a subscriber that was away reads the current catalog when it comes back.
"""

from __future__ import annotations

import uuid
from typing import Any

import contract
from order_service.catalog.model import CatalogState, Category, Item, Option
from order_service.errors import Conflict, InvalidField, NotFound
from order_service.store.db import db, hold_writer_lock
from order_service.store.models import Outbox, new_id, rfc3339, utcnow

# Bounds that keep the whole catalog in one MQTT message well under the brokers' 1 MiB
# limit: 150 items of a 200-character name (up to 800 bytes in UTF-8), a 300-character
# description and 10 options of 60 characters come to about 0.7 MB.
MAX_CATEGORIES = 50
MAX_ITEMS = 150
MAX_OPTIONS = 10
CATALOG_EVENT = "catalog.updated"


def option_dict(option: Option) -> dict[str, Any]:
    return {"id": option.id, "name": option.name, "price_delta_cents": option.price_delta_cents}


def item_dict(item: Item, options: list[Option] | None = None) -> dict[str, Any]:
    if options is None:
        options = list(Option.select().where(Option.item == item.id).order_by(Option.position, Option.id))
    return {
        "id": item.id,
        "category_id": item.category_id,
        "name": item.name,
        "description": item.description,
        "price_cents": item.price_cents,
        "available": item.available,
        "position": item.position,
        "options": [option_dict(o) for o in options],
    }


def category_dict(category: Category, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if items is None:
        items = [item_dict(i) for i in Item.in_order().where(Item.category == category.id)]
    return {"id": category.id, "name": category.name, "position": category.position, "items": items}


def catalog_dict(currency: str) -> dict[str, Any]:
    """The whole catalog, as ``GET /api/v1/catalog`` answers and ``catalog`` carries it:
    four queries, whatever its size."""
    state = CatalogState.get_or_none(CatalogState.id == 1)
    options: dict[str, list[Option]] = {}
    for option in Option.select().order_by(Option.position, Option.id):
        options.setdefault(option.item_id, []).append(option)
    items: dict[str, list[dict[str, Any]]] = {}
    for item in Item.in_order():
        items.setdefault(item.category_id, []).append(item_dict(item, options.get(item.id, [])))
    return {
        "version": state.version if state else 0,
        "currency": currency,
        "updated_at": rfc3339(state.updated_at if state else utcnow()),
        "categories": [category_dict(c, items.get(c.id, [])) for c in Category.in_order()],
    }


def _changed(currency: str) -> None:
    """Raise the version and write the outbox row of the catalog as it now is (in the
    caller's transaction, after its change)."""
    now = utcnow()
    CatalogState.update(version=CatalogState.version + 1, updated_at=now).where(
        CatalogState.id == 1
    ).execute()
    payload = contract.dumps(catalog_dict(currency))
    hold_writer_lock()  # outbox id order = commit order (see store/db.py)
    Outbox.create(
        event_id=uuid.uuid4().hex,
        event=CATALOG_EVENT,
        kind="catalog",
        topic=contract.CATALOG,
        payload=payload,
    )


def _category(category_id: str, field: str | None = None) -> Category:
    category = Category.get_or_none(Category.id == category_id)
    if category is None:
        if field:
            raise InvalidField(field, f"no category {category_id!r}")
        raise NotFound("category", category_id)
    return category


def _item(item_id: str) -> Item:
    item = Item.get_or_none(Item.id == item_id)
    if item is None:
        raise NotFound("item", item_id)
    return item


def create_category(name: str, position: int | None, currency: str) -> dict[str, Any]:
    with db.atomic():
        count = Category.select().count()
        if count >= MAX_CATEGORIES:
            raise Conflict(
                f"the catalog holds at most {MAX_CATEGORIES} categories",
                title="Catalog full",
                slug="catalog-full",
            )
        now = utcnow()
        category = Category.create(
            id=new_id("cat"),
            name=name,
            position=count if position is None else position,
            created_at=now,
            updated_at=now,
        )
        _changed(currency)
        return category_dict(category, [])


def update_category(category_id: str, changes: dict[str, Any], currency: str) -> dict[str, Any]:
    with db.atomic():
        category = _category(category_id)
        if not changes:
            return category_dict(category)
        for key, value in changes.items():
            setattr(category, key, value)
        category.updated_at = utcnow()
        category.save()
        _changed(currency)
        return category_dict(category)


def delete_category(category_id: str, currency: str) -> None:
    with db.atomic():
        category = _category(category_id)
        held = Item.select().where(Item.category == category.id).count()
        if held:
            raise Conflict(
                f"category {category_id!r} still holds {held} items: move or delete them first",
                title="Category not empty",
                slug="category-not-empty",
                items=held,
            )
        category.delete_instance()
        _changed(currency)


def _replace_options(item: Item, options: list[dict[str, Any]]) -> list[Option]:
    if len(options) > MAX_OPTIONS:
        raise InvalidField("options", f"at most {MAX_OPTIONS} options per item")
    Option.delete().where(Option.item == item.id).execute()
    rows = [
        Option(
            id=new_id("opt"),
            item=item.id,
            name=o["name"],
            price_delta_cents=o["price_delta_cents"],
            position=i,
        )
        for i, o in enumerate(options)
    ]
    for row in rows:
        row.save(force_insert=True)
    return rows


def _check_price(price_cents: int, options: list[dict[str, Any]] | list[Option]) -> None:
    """No choice of options may bring an item below zero."""
    lowest = price_cents + sum(
        min(0, o["price_delta_cents"] if isinstance(o, dict) else o.price_delta_cents) for o in options
    )
    if lowest < 0:
        raise InvalidField("options", "the options' negative price deltas take the price below zero")


def create_item(fields: dict[str, Any], currency: str) -> dict[str, Any]:
    """``fields``: category_id, name, description, price_cents, available, position (None:
    last of its category), options (name, price_delta_cents each)."""
    with db.atomic():
        _category(fields["category_id"], field="category_id")
        if Item.select().count() >= MAX_ITEMS:
            raise Conflict(
                f"the catalog holds at most {MAX_ITEMS} items", title="Catalog full", slug="catalog-full"
            )
        options = fields.get("options") or []
        _check_price(fields["price_cents"], options)
        position = fields.get("position")
        if position is None:
            position = Item.select().where(Item.category == fields["category_id"]).count()
        now = utcnow()
        item = Item.create(
            id=new_id("itm"),
            category=fields["category_id"],
            name=fields["name"],
            description=fields.get("description", ""),
            price_cents=fields["price_cents"],
            available=fields.get("available", True),
            position=position,
            created_at=now,
            updated_at=now,
        )
        rows = _replace_options(item, options)
        _changed(currency)
        return item_dict(item, rows)


def update_item(item_id: str, changes: dict[str, Any], currency: str) -> dict[str, Any]:
    """Change the fields given; ``options``, when given, replace the item's options as a whole."""
    with db.atomic():
        item = _item(item_id)
        if not changes:
            return item_dict(item)
        if "category_id" in changes:
            _category(changes["category_id"], field="category_id")
        options = changes.pop("options", None)
        kept = list(item.options) if options is None else options
        _check_price(changes.get("price_cents", item.price_cents), kept)
        for key, value in changes.items():
            setattr(item, "category" if key == "category_id" else key, value)
        item.updated_at = utcnow()
        item.save()
        rows = _replace_options(item, options) if options is not None else None
        _changed(currency)
        return item_dict(item, rows)


def delete_item(item_id: str, currency: str) -> None:
    """Placed orders keep their lines: they hold a snapshot, not a reference."""
    with db.atomic():
        item = _item(item_id)
        Option.delete().where(Option.item == item.id).execute()
        item.delete_instance()
        _changed(currency)


def is_empty() -> bool:
    return not Category.select().exists()


SEED: list[tuple[str, list[tuple[str, str, int, list[tuple[str, int]]]]]] = [
    (
        "Pizza",
        [
            ("Margherita", "Tomato, mozzarella, basil", 950, [("Extra mozzarella", 150), ("Large", 300)]),
            ("Diavola", "Tomato, mozzarella, spicy salami", 1150, [("Extra chili", 50), ("Large", 300)]),
            ("Quattro formaggi", "Mozzarella, gorgonzola, fontina, parmesan", 1250, [("Large", 300)]),
        ],
    ),
    (
        "Salads",
        [
            ("Caesar salad", "Romaine, parmesan, croutons", 850, [("Grilled chicken", 250)]),
            ("Greek salad", "Tomato, cucumber, feta, olives", 800, []),
        ],
    ),
    (
        "Drinks",
        [
            ("Lemonade", "Home-made, 0.4 l", 350, []),
            ("Sparkling water", "0.5 l", 250, []),
            ("Espresso", "", 200, [("Double", 100)]),
        ],
    ),
]


def seed(currency: str) -> bool:
    """A small sample catalog, only into an empty one (``bootstrap``); True if it was made."""
    with db.atomic():
        if not is_empty():
            return False
        now = utcnow()
        for c, (category_name, items) in enumerate(SEED):
            category = Category.create(
                id=new_id("cat"), name=category_name, position=c, created_at=now, updated_at=now
            )
            for i, (name, description, price, options) in enumerate(items):
                item = Item.create(
                    id=new_id("itm"),
                    category=category.id,
                    name=name,
                    description=description,
                    price_cents=price,
                    available=True,
                    position=i,
                    created_at=now,
                    updated_at=now,
                )
                _replace_options(item, [{"name": n, "price_delta_cents": d} for n, d in options])
        _changed(currency)
        return True
