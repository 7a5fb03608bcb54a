"""The admin dashboard's static files at /admin/ (clients/admin in the repository).

The page is buildless: HTML, CSS and ES modules served as they are, plus mqtt.js from
the npm package that ``make admin-deps`` installs (``npm ci`` in clients/admin). Every
answer carries a Content-Security-Policy that allows no inline script or style: the
page's scripts and styles are files of this origin, and it may talk only to this API
and to a broker over WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, redirect, send_from_directory
from flask.typing import ResponseReturnValue

# The dashboard lives in the repository next to the service (an editable install).
ADMIN_DIR = Path(__file__).resolve().parents[2] / "clients" / "admin"
# The only files of node_modules the page needs: name under /admin/vendor/ -> path.
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
        "img-src 'self' data: blob:",
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


def app_blueprint(
    name: str, where: Callable[[], Path], deps_target: str, types: dict[str, str] = MIMETYPES
) -> Blueprint:
    """The blueprint serving one buildless web app at ``/<name>/`` from the folder ``where()``
    names (looked up per request): its index, its own files (of the ``types`` suffixes) and
    mqtt.js from its node_modules, every answer with :data:`HEADERS`. ``deps_target`` is the
    make target installing mqtt.js."""
    bp = Blueprint(f"{name}_app", __name__, url_prefix=f"/{name}")

    @bp.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        return response

    @bp.get("")
    def _slash() -> ResponseReturnValue:
        return redirect(f"/{name}/", code=308)

    @bp.get("/")
    def index() -> Response:
        return send_from_directory(where(), "index.html", mimetype=types[".html"])

    @bp.get("/vendor/<file>")
    def vendor(file: str) -> Response:
        path = VENDOR.get(file)
        if path is None:
            abort(404)
        if not (where() / path).is_file():
            return Response(
                f"{file} is not installed: run `make {deps_target}` (npm ci in clients/{where().name})\n",
                status=503,
                mimetype="text/plain",
            )
        return send_from_directory(where(), str(path), mimetype=types[path.suffix])

    @bp.get("/<path:file>")
    def static_file(file: str) -> Response:
        # Only the app's own files: never node_modules, package files or anything hidden.
        suffix = Path(file).suffix
        hidden = any(p.startswith(".") or p == "node_modules" for p in Path(file).parts)
        if hidden or suffix not in types:
            abort(404)
        return send_from_directory(where(), file, mimetype=types[suffix])

    return bp


bp = app_blueprint("admin", lambda: ADMIN_DIR, "admin-deps")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
