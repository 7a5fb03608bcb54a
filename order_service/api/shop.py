"""The customers' shop's static files at /shop/ (clients/shop in the repository).

Buildless like the admin dashboard and served the same way, with the same headers (a
Content-Security-Policy without inline script or style; :mod:`order_service.api.dashboard`).
It has no npm package of its own: it imports the dashboard's mqtt.js, REST client and
formatting (``/admin/vendor/mqtt.esm.js``, ``/admin/js/api.js``, ``/admin/js/format.js``),
so one pinned mqtt.js (``make admin-deps``, which ``make run`` and ``make test`` run)
serves both pages.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from order_service.api.dashboard import app_blueprint

SHOP_DIR = Path(__file__).resolve().parents[2] / "clients" / "shop"

bp = app_blueprint("shop", lambda: SHOP_DIR, "admin-deps")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
