"""/catalog: the catalog everyone reads (no login needed) and the admins' changes to it."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from pydantic import BaseModel

from order_service.api import catalog_schemas as schemas
from order_service.api.common import BEARER, blueprint, public
from order_service.api.problems import field_problem
from order_service.api.security import require
from order_service.catalog import service as catalog

bp = blueprint("catalog", "The catalog: categories, items and options, with prices")


def _currency() -> str:
    return current_app.config["ORDERBUS"].currency


def _changes(body: BaseModel) -> dict:
    """The fields a PATCH gives; null is not a value any of them may take."""
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None:
            raise field_problem(field, "may not be null: leave the field out to keep it")
    return changes


def _created(body: dict) -> Response:
    response = jsonify(body)
    response.status_code = 201
    return response


@bp.get("/catalog", responses={200: schemas.CatalogOut})
def get_catalog() -> Response:
    """The whole catalog, sold-out items included (``available: false``); anyone may read it.

    The retained MQTT topic ``catalog`` carries the same body, republished on every change."""
    return jsonify(catalog.catalog_dict(_currency()))


public("catalog.get_catalog")


@bp.post("/catalog/categories", responses={201: schemas.CategoryOut}, security=BEARER)
@require("admin")
def create_category(body: schemas.CategoryCreate) -> Response:
    """Add a category (at most 50)."""
    return _created(catalog.create_category(body.name, body.position, _currency()))


@bp.patch("/catalog/categories/<category_id>", responses={200: schemas.CategoryOut}, security=BEARER)
@require("admin")
def update_category(path: schemas.CategoryPath, body: schemas.CategoryPatch) -> Response:
    """Rename or move a category."""
    return jsonify(catalog.update_category(path.category_id, _changes(body), _currency()))


@bp.delete("/catalog/categories/<category_id>", responses={204: None}, security=BEARER)
@require("admin")
def delete_category(path: schemas.CategoryPath) -> tuple[str, int]:
    """Remove an empty category (409 while it holds items)."""
    catalog.delete_category(path.category_id, _currency())
    return "", 204


@bp.post("/catalog/items", responses={201: schemas.CatalogItemOut}, security=BEARER)
@require("admin")
def create_item(body: schemas.ItemCreate) -> Response:
    """Add an item to a category (at most 150 items, 10 options each)."""
    return _created(catalog.create_item(body.model_dump(), _currency()))


@bp.patch("/catalog/items/<item_id>", responses={200: schemas.CatalogItemOut}, security=BEARER)
@require("admin")
def update_item(path: schemas.ItemPath, body: schemas.ItemPatch) -> Response:
    """Change an item; ``{"available": false}`` marks it sold out, ``options`` replace its options.

    Placed orders keep the prices they were placed with."""
    return jsonify(catalog.update_item(path.item_id, _changes(body), _currency()))


@bp.delete("/catalog/items/<item_id>", responses={204: None}, security=BEARER)
@require("admin")
def delete_item(path: schemas.ItemPath) -> tuple[str, int]:
    """Remove an item; placed orders keep their lines."""
    catalog.delete_item(path.item_id, _currency())
    return "", 204
