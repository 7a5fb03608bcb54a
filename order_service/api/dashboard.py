"""The browser pages' static files: the admin dashboard at /admin/ (clients/admin in the
repository) and the customers' shop at /shop/ (clients/shop).

Each page is buildless: HTML, CSS and ES modules served as they are, plus mqtt.js from
the npm package that ``make admin-deps`` installs (``npm ci`` in clients/admin; the shop
uses the same copy, one pinned version for both). Every answer
carries a Content-Security-Policy that allows no inline script or style: the
page's scripts and styles are files of this origin, and it may talk only to this API
and to a broker over WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, redirect, send_from_directory
from flask.typing import ResponseReturnValue

# The pages live in the repository next to the service (an editable install).
ADMIN_DIR = Path(__file__).resolve().parents[2] / "clients" / "admin"
SHOP_DIR = Path(__file__).resolve().parents[2] / "clients" / "shop"
# The only files of node_modules the pages need: name under vendor/ -> path in clients/admin.
VENDOR = {"mqtt.esm.js": Path("node_modules/mqtt/dist/mqtt.esm.js")}
# Browsers run ES modules only when served as JavaScript: do not leave the type to the system's table.
MIMETYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The files change with the code, not per request: revalidate (ETag) on every load.
    "Cache-Control": "no-cache",
}


def _blueprint(name: str, prefix: str, root: Callable[[], Path]) -> Blueprint:
    """One page's files under ``prefix``: its index, its own files, and mqtt.js at vendor/."""
    bp = Blueprint(name, __name__, url_prefix=prefix)

    @bp.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        return response

    @bp.get("")
    def _slash() -> ResponseReturnValue:
        return redirect(f"{prefix}/", code=308)

    @bp.get("/")
    def index() -> Response:
        return send_from_directory(root(), "index.html")

    @bp.get("/vendor/<name>")
    def vendor(name: str) -> Response:
        # Both pages use the one mqtt.js that `make admin-deps` installs in clients/admin.
        path = VENDOR.get(name)
        if path is None:
            abort(404)
        if not (ADMIN_DIR / path).is_file():
            return Response(
                f"{name} is not installed: run `make admin-deps` (npm ci in clients/admin)\n",
                status=503,
                mimetype="text/plain",
            )
        return send_from_directory(ADMIN_DIR, str(path), mimetype=MIMETYPES[path.suffix])

    @bp.get("/<path:name>")
    def static_file(name: str) -> Response:
        # Only the page's own files: never node_modules, package files or anything hidden.
        suffix = Path(name).suffix
        hidden = any(p.startswith(".") or p == "node_modules" for p in Path(name).parts)
        if hidden or suffix not in MIMETYPES:
            abort(404)
        return send_from_directory(root(), name, mimetype=MIMETYPES[suffix])

    return bp


def init_app(app: Flask) -> None:
    app.register_blueprint(_blueprint("admin_dashboard", "/admin", lambda: ADMIN_DIR))
    app.register_blueprint(_blueprint("shop", "/shop", lambda: SHOP_DIR))
