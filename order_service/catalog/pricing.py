"""The server's price of every line of an order: customers never send a price.

A catalog line names an item and its options (``{"item_id", "quantity", "option_ids"}``);
its unit price is the item's price plus its options' deltas, read now, and the line keeps
a snapshot (the item's name, that unit price, the options' names) so a later change of the
catalog never alters a placed order. Only an admin may add a custom line with its own name
and price (``{"name", "quantity", "unit_price_cents"}``: a phone order's special request).
"""

from __future__ import annotations

from typing import Any

from order_service.catalog.model import Item, Option
from order_service.errors import Conflict, InvalidField
from order_service.store.inserts import Select

PRICES_ARE_THE_SERVERS = "customers do not send prices: order catalog items by item_id (GET /api/v1/catalog)"


def _custom(line: dict[str, Any], at: str, allowed: bool) -> dict[str, Any]:
    if not allowed:
        if "unit_price_cents" in line:
            raise InvalidField(f"{at}.unit_price_cents", PRICES_ARE_THE_SERVERS)
        raise InvalidField(f"{at}.item_id", "required: the catalog item to order (GET /api/v1/catalog)")
    for field in ("name", "unit_price_cents"):
        if field not in line:
            raise InvalidField(f"{at}.{field}", "required on a custom line (or send item_id)")
    if line.get("option_ids"):
        raise InvalidField(f"{at}.option_ids", "options belong to catalog items: send item_id")
    return {
        "name": line["name"],
        "quantity": line["quantity"],
        "unit_price_cents": line["unit_price_cents"],
        "item_id": None,
        "options": None,
    }


def _check_catalog_line(line: dict[str, Any], at: str) -> None:
    for field in ("name", "unit_price_cents"):
        if field in line:
            raise InvalidField(f"{at}.{field}", "not with item_id: the catalog names and prices its items")


# An order names a few items: each read with a statement built once (store/inserts.py)
# costs less than one query built for all of them; a long order is read in one query.
FEW = 4
_ITEM = Select(Item, "id")
_ITEM_OPTIONS = Select(Option, "item")


def _items(ids: list[str]) -> list[Item]:
    if len(ids) > FEW:
        return list(Item.select().where(Item.id.in_(ids)))
    return [item for item_id in ids for item in _ITEM.all(item_id)]


def _options(item_ids: list[str]) -> list[Option]:
    if len(item_ids) > FEW:
        return list(Option.select().where(Option.item.in_(item_ids)))
    return [option for item_id in item_ids for option in _ITEM_OPTIONS.all(item_id)]


def price_lines(lines: list[dict[str, Any]], *, custom_allowed: bool) -> list[dict[str, Any]]:
    """Each line priced (name, quantity, unit_price_cents, item_id, options), in order.

    Refusals name the line's field: a price or an item id missing where required, an
    unknown item, an option that is not the item's (InvalidField, 422); an item switched
    off (Conflict, 409). The order is written with the prices read here: ``create_order``
    reads them just before its transaction, so that writers do not wait on the reads; an
    order whose retry finds an item since changed is still the one first placed."""
    wanted = sorted({line["item_id"] for line in lines if line.get("item_id")})
    items = {i.id: i for i in _items(wanted)}
    options = {o.id: o for o in _options(list(items))}
    priced = []
    for n, line in enumerate(lines):
        at = f"items.{n}"
        item_id = line.get("item_id")
        if not item_id:
            priced.append(_custom(line, at, custom_allowed))
            continue
        _check_catalog_line(line, at)
        item = items.get(item_id)
        if item is None:
            raise InvalidField(f"{at}.item_id", f"no catalog item {item_id!r}")
        if not item.available:
            raise Conflict(
                f"{item.name!r} is sold out; remove it from the order",
                title="Item unavailable",
                slug="item-unavailable",
                item_id=item.id,
                errors=[{"field": f"{at}.item_id", "message": f"{item.name!r} is sold out"}],
            )
        chosen: list[Option] = []
        for k, option_id in enumerate(line.get("option_ids") or []):
            option = options.get(option_id)
            if option is None or option.item_id != item.id:
                raise InvalidField(f"{at}.option_ids.{k}", f"no option {option_id!r} of item {item.id!r}")
            if option in chosen:
                raise InvalidField(f"{at}.option_ids.{k}", f"option {option_id!r} is given twice")
            chosen.append(option)
        chosen.sort(key=lambda o: (o.position, o.id))
        unit = item.price_cents + sum(o.price_delta_cents for o in chosen)
        if unit < 0:
            raise InvalidField(f"{at}.option_ids", "these options take the price below zero")
        priced.append(
            {
                "name": item.name,
                "quantity": line["quantity"],
                "unit_price_cents": unit,
                "item_id": item.id,
                "options": [o.name for o in chosen],
            }
        )
    return priced
