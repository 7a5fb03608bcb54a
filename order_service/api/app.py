"""The API's application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask_openapi3 import Info, OpenAPI

from order_service import api
from order_service.api import dashboard, problems
from order_service.config import load_settings
from order_service.outbox.wakeup import Notifier
from order_service.store import db

logger = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> OpenAPI:
    """Build the API. ``test_config`` overrides settings (same names as the variables)."""
    settings = load_settings(test_config)
    app = OpenAPI(
        __name__,
        info=Info(
            title="orderbus", version="1", description="Real-time order management: REST in, MQTT out."
        ),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_callback=problems.validation_error_response,
        doc_prefix="/api/v1/docs",
        doc_url="/openapi.json",
    )
    app.config["ORDERBUS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    db.init_db(settings.database_url, settings.sqlite_synchronous)
    db.init_app(app)
    problems.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)

    notifier = Notifier(settings.wakeup_socket)
    app.extensions["orderbus.notifier"] = notifier
    # Every transaction that wrote outbox rows wakes the relay right after its COMMIT,
    # before the response is encoded and sent.
    db.on_outbox_commit(notifier.notify)

    return app
