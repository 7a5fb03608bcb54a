"""The REST API under /api/v1, one module per resource."""

from __future__ import annotations

from flask_openapi3 import OpenAPI

from . import agents, auth, common, orders, system


def init_app(app: OpenAPI) -> None:
    common.init_app(app)
    for module in (auth, orders, agents, system):
        app.register_api(module.bp)
