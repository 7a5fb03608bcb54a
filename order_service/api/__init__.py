"""The REST API under /api/v1, one module per resource."""

from __future__ import annotations

from flask_openapi3 import OpenAPI
from flask_openapi3.models import Schema

from order_service.api import agents, auth, common, dispatch, orders, schemas, system, webhooks


def init_app(app: OpenAPI) -> None:
    common.init_app(app)
    for module in (auth, orders, agents, system, dispatch, webhooks):
        app.register_api(module.bp)
    # Error responses are application/problem+json; their schema is referenced by name.
    app.components_schemas["Problem"] = Schema(**schemas.Problem.model_json_schema())
