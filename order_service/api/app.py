"""The API's application factory."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask_openapi3 import Info, OpenAPI
from werkzeug.exceptions import ClientDisconnected
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import LimitedStream, get_content_length

from order_service import api
from order_service.api import access_log, courier, dashboard, fast_orders, problems, shop
from order_service.config import load_settings
from order_service.outbox.wakeup import Notifier
from order_service.store import db, group

logger = logging.getLogger(__name__)


class TrustedProxies:
    """X-Forwarded-For and X-Forwarded-Proto count only on requests that come from a trusted
    proxy (ORDERBUS_TRUSTED_PROXIES); from anyone else they are ignored, so a client cannot
    pass itself off as another address. The proxy must set X-Forwarded-For to the address it
    saw (not append to what the client sent): the last value is the one taken."""

    def __init__(self, wsgi_app: Callable, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.direct = wsgi_app
        self.forwarded = ProxyFix(wsgi_app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=0)
        self.networks = tuple(networks)

    def _trusted(self, peer: str | None) -> bool:
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self._trusted(environ.get("REMOTE_ADDR")):
            return self.forwarded(environ, start_response)
        return self.direct(environ, start_response)


class ReadWholeBody:
    """Reads, before the answer goes, what the application left unread of a request body
    of up to ``Settings.drain_body_bytes`` (1 MiB, or ORDERBUS_MAX_BODY_BYTES if larger): an
    answer given before the body was read (413, 401, 415, 404) must not leave it on a
    kept-alive connection, where the server would give up on the connection after the
    answer, and a client still sending it would have its connection reset before it reads
    the answer. A larger body is not read: its answer says ``Connection: close``, and so
    does the answer to a body of unknown length (chunked), after up to the limit of it is
    read; the server closes the connection after such an answer."""

    def __init__(self, wsgi_app: Callable, limit: int) -> None:
        self.wsgi_app, self.limit = wsgi_app, limit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        length = get_content_length(environ)
        if length is None and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.chunked(environ, start_response)
        if not length:
            return self.wsgi_app(environ, start_response)
        if length > self.limit:
            return self.wsgi_app(environ, closing(start_response))
        body = environ["wsgi.input"] = LimitedStream(environ["wsgi.input"], length)
        response = self.wsgi_app(environ, start_response)
        try:
            while body.read(65536):
                pass
        except ClientDisconnected:  # gone before sending all it announced: nothing more to read
            pass
        return response

    def chunked(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """A body of unknown length: the server ends the stream where the chunks end, so the
        app may read it (werkzeug then applies ``MAX_CONTENT_LENGTH`` as it reads); up to
        the limit of what it left is read before the answer goes, so that a client still
        sending is not reset before it reads it; then the connection closes."""
        environ["wsgi.input_terminated"] = True
        stream = environ["wsgi.input"]
        response = self.wsgi_app(environ, closing(start_response))
        left = self.limit
        try:
            while left > 0 and (chunk := stream.read(min(65536, left))):
                left -= len(chunk)
        except Exception:  # a malformed chunk: the connection closes anyway
            pass
        return response


def closing(start_response: Callable) -> Callable:
    """``start_response`` that adds ``Connection: close``: the server closes the connection
    after this answer (hyper, under granian, honours the header)."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        headers = [(name, value) for name, value in headers if name.lower() != "connection"]
        return start_response(status, [*headers, ("Connection", "close")], exc_info)

    return start


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

    db.init_db(settings.database_url, settings.sqlite_synchronous, "orderbus-api")
    group.configure(settings.sqlite_group_commit)
    db.init_app(app)
    problems.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)
    courier.init_app(app)
    shop.init_app(app)
    if settings.api_fast_path:  # inside ReadWholeBody: a body it leaves unread is read there
        app.wsgi_app = fast_orders.FastOrders(app, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = ReadWholeBody(app.wsgi_app, settings.drain_body_bytes)  # type: ignore[method-assign]

    if settings.trusted_proxy_networks:  # behind a reverse proxy (docs/production.md)
        app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxy_networks)  # type: ignore[method-assign]
    if settings.api_access_log:  # outermost: it logs the client TrustedProxies settled on
        access_log.enable()
        app.wsgi_app = access_log.AccessLog(app.wsgi_app)  # type: ignore[method-assign]

    notifier = Notifier(settings.wakeup_socket)
    app.extensions["orderbus.notifier"] = notifier
    # Every transaction that wrote outbox rows wakes the relay right after its COMMIT,
    # before the response is encoded and sent.
    db.on_outbox_commit(notifier.notify)

    return app
