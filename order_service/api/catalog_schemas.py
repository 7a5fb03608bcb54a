"""The catalog's request and response bodies (the shared field types are in ``schemas``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from order_service.api.schemas import MULTI_LINE, NO_NUL, ONE_LINE, Int, OptionalInt, Strict

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE)
]
OptionName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60, pattern=ONE_LINE)
]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=300, pattern=MULTI_LINE)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NO_NUL)]
MAX_PRICE = 10_000_000
MAX_POSITION = 10_000


class OptionIn(Strict):
    name: OptionName
    price_delta_cents: Int = Field(
        0, ge=-MAX_PRICE, le=MAX_PRICE, description="added to the item's price when chosen"
    )


class CategoryCreate(Strict):
    name: Name
    position: OptionalInt = Field(None, ge=0, le=MAX_POSITION, description="default: after the others")


def _absent_is_not_null(schema: dict) -> None:
    """A PATCH field may be left out, not sent as null (the API refuses null, naming the
    field): the document offers each field's own type only."""
    for prop in schema.get("properties", {}).values():
        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1:
            prop.update(variants[0])
        elif variants:
            prop["anyOf"] = variants
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class Patch(Strict):
    model_config = ConfigDict(json_schema_extra=_absent_is_not_null)


class CategoryPatch(Patch):
    """The fields given change (null is refused: leave a field out to keep it)."""

    name: Name | None = None
    position: OptionalInt = Field(None, ge=0, le=MAX_POSITION)


class ItemCreate(Strict):
    category_id: Id
    name: Name
    description: Description = ""
    price_cents: Int = Field(ge=0, le=MAX_PRICE)
    available: bool = True
    position: OptionalInt = Field(None, ge=0, le=MAX_POSITION, description="default: last of its category")
    options: list[OptionIn] = Field([], max_length=10)


class ItemPatch(Patch):
    """The fields given change; ``options``, when given, replace the item's options as a whole.
    ``{"available": false}`` marks the item sold out."""

    category_id: Id | None = None
    name: Name | None = None
    description: Description | None = None
    price_cents: OptionalInt = Field(None, ge=0, le=MAX_PRICE)
    available: bool | None = None
    position: OptionalInt = Field(None, ge=0, le=MAX_POSITION)
    options: list[OptionIn] | None = Field(None, max_length=10)


class CategoryPath(BaseModel):
    category_id: str = Field(max_length=32, pattern=NO_NUL)


class ItemPath(BaseModel):
    item_id: str = Field(max_length=32, pattern=NO_NUL)


class OptionOut(BaseModel):
    id: str
    name: str
    price_delta_cents: int


class CatalogItemOut(BaseModel):
    id: str
    category_id: str
    name: str
    description: str
    price_cents: int
    available: bool
    position: int
    options: list[OptionOut]


class CategoryOut(BaseModel):
    id: str
    name: str
    position: int
    items: list[CatalogItemOut]


class CatalogOut(BaseModel):
    version: int = Field(description="rises with every change; the retained topic catalog carries it too")
    currency: str
    updated_at: str
    categories: list[CategoryOut]
