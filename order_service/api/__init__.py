"""HTTP only: the Flask app (``app``, served by granian: ``order_service.api_server``), the REST
API under /api/v1 with one module per resource, request and response schemas
(``schemas``), who is asking (``security``), problem+json for every error (``problems``)
and the browser pages' static files (``dashboard``, ``shop``).

A new REST endpoint goes into the resource's module here, its body into ``schemas``;
what it does belongs to a domain room. May import every room below it.
"""

from __future__ import annotations

from flask_openapi3 import OpenAPI
from flask_openapi3.models import Schema

from order_service.api import (
    agents,
    auth,
    catalog,
    common,
    dispatch,
    orders,
    proof,
    push,
    schemas,
    system,
    webhooks,
)


def init_app(app: OpenAPI) -> None:
    common.init_app(app)
    for module in (auth, orders, proof, catalog, agents, push, system, dispatch, webhooks):
        app.register_api(module.bp)
    # Error responses are application/problem+json; their schema is referenced by name.
    app.components_schemas["Problem"] = Schema(**schemas.Problem.model_json_schema())
