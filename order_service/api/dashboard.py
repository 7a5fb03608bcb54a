"""The admin dashboard's static files at /admin/ (clients/admin in the repository).

The page is buildless: HTML, CSS and ES modules served as they are, plus mqtt.js from
the npm package that ``make admin-deps`` installs (``npm ci`` in clients/admin). Every
answer carries a Content-Security-Policy that allows no inline script or style: the
page's scripts and styles are files of this origin, and it may talk only to this API
and to a broker over WebSocket. The admin dashboard's map also loads images (tiles) from
ORDERBUS_MAP_TILE_URL's origin, given to the page by ``/admin/config.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, redirect, send_from_directory
from flask.typing import ResponseReturnValue

# The dashboard lives in the repository next to the service (an editable install).
ADMIN_DIR = Path(__file__).resolve().parents[2] / "clients" / "admin"
# The only files of node_modules the page needs: name under /admin/vendor/ -> path.
VENDOR = {
    "mqtt.esm.js": Path("node_modules/mqtt/dist/mqtt.esm.js"),
    # The dispatcher's map (the admin dashboard only): Leaflet's ES module and its styles.
    "leaflet.esm.js": Path("node_modules/leaflet/dist/leaflet-src.esm.js"),
    "leaflet.css": Path("node_modules/leaflet/dist/leaflet.css"),
}
# Browsers run ES modules only when served as JavaScript: do not leave the type to the system's table.
MIMETYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def content_security_policy(img_sources: tuple[str, ...] = ()) -> str:
    """The apps' CSP; ``img_sources`` adds image origins (the admin map's tile server)."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            " ".join(("img-src 'self' data:", *img_sources, "blob:")),  # blob: the delivery photo
            "connect-src 'self' ws: wss:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


CSP = content_security_policy()
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
    name: str,
    where: Callable[[], Path],
    deps_target: str,
    types: dict[str, str] = MIMETYPES,
    img_sources: Callable[[], tuple[str, ...]] = tuple,
) -> Blueprint:
    """The blueprint serving one buildless web app at ``/<name>/`` from the folder ``where()``
    names (looked up per request): its index, its own files (of the ``types`` suffixes) and
    mqtt.js from its node_modules, every answer with :data:`HEADERS`. ``deps_target`` is the
    make target installing mqtt.js; ``img_sources()`` adds image origins to the CSP."""
    bp = Blueprint(f"{name}_app", __name__, url_prefix=f"/{name}")

    @bp.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        extra = img_sources()
        if extra:
            response.headers["Content-Security-Policy"] = content_security_policy(extra)
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


def _tile_origin() -> tuple[str, ...]:
    origin = current_app.config["ORDERBUS"].map_tile_origin
    return (origin,) if origin else ()


bp = app_blueprint("admin", lambda: ADMIN_DIR, "admin-deps", img_sources=_tile_origin)


@bp.get("/config.json")
def page_config() -> Response:
    """What the page needs before logging in: the map's tile server (not a secret)."""
    settings = current_app.config["ORDERBUS"]
    return jsonify({"map": {"tile_url": settings.map_tile_url, "attribution": settings.map_tile_attribution}})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
