"""The courier app's static files at /courier/ (clients/courier in the repository).

Buildless like the admin dashboard and served the same way, with the same headers (a
Content-Security-Policy without inline script or style; :mod:`order_service.api.dashboard`),
plus what makes it installable: the web app manifest (``.webmanifest``) and the service
worker, served from ``/courier/sw.js`` so that its scope is the whole app. mqtt.js comes
from the npm package ``make courier-deps`` installs (``npm ci`` in clients/courier). The
app imports the dashboard's contract and REST modules (``/admin/js/contract.js``,
``/admin/js/api.js``): one JavaScript copy of the contract.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from order_service.api.dashboard import MIMETYPES, app_blueprint

COURIER_DIR = Path(__file__).resolve().parents[2] / "clients" / "courier"
TYPES = {**MIMETYPES, ".webmanifest": "application/manifest+json"}

bp = app_blueprint("courier", lambda: COURIER_DIR, "courier-deps", TYPES)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
