"""The two hot requests without Flask's per-request machinery, when they succeed: placing an
order (``POST /api/v1/orders``) and moving one along (``PATCH /api/v1/orders/<id>/status``).

Under Flask about a third of the API worker's CPU per order went to the framework around
the view (the request context, URL matching, before-request hooks, flask-openapi3's view
wrapper, the response object and the teardown), not to the order (issue 20). This WSGI
layer answers those two requests itself, with the same steps and the same code as their
views (``orders.place_order``, ``orders.move_order``, ``orders.order_text``): the bearer
token checked against the database, the body's media type and size, one JSON parse, the
view's own pydantic model, the Idempotency-Key or If-Match header, one transaction.

Whatever the checks in front of the view refuse — no or a bad token, a body that is not
JSON or fails the view's model, a bad header, a role that may not place orders — goes on
to the Flask app with its body intact, which answers it exactly as before (its
problem+json); nothing has been written then. Once the service has run, its answer is given
here, whatever it is: a refusal (unknown item, sold out, a customer's price, an illegal
move, a stale version, a wrong delivery code) is mapped by ``problems`` as the app's error
handlers map it, a busy database is the same 503, an unexpected error the same 500. Never
handed on, because running the service a second time is not harmless: a wrong delivery
code is counted even though the move is refused, and a fault after the commit would
place the order twice.

``ORDERBUS_API_FAST_PATH=false`` sends every request through Flask (to compare, or if
this layer were ever suspected).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import peewee
from flask import Flask

from order_service import errors, faults
from order_service.accounts.users import user_for_token
from order_service.api import problems, schemas
from order_service.api.common import PREFIX, idempotency_key, if_match
from order_service.api.orders import move_order, order_text, place_order
from order_service.store.db import db
from order_service.store.models import Order, User

logger = logging.getLogger(__name__)

ORDERS = f"{PREFIX}/orders"
STATUS = re.compile(rf"{re.escape(ORDERS)}/([!-.0-~]{{1,32}})/status")  # printable ASCII, no "/"
PLACE_ROLES = ("customer", "admin")  # as the view's @require says


class Fallback(Exception):
    """This request is not one the fast path answers: the Flask app does."""


class FastOrders:
    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app, self.next = app, wsgi_app
        self.settings = app.config["ORDERBUS"]
        self.limit = app.config["MAX_CONTENT_LENGTH"]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        order_id = None
        if method == "POST" and path == ORDERS:
            pass
        elif method == "PATCH" and (match := STATUS.fullmatch(path)):
            order_id = match.group(1)
        else:
            return self.next(environ, start_response)
        try:
            body = self._body(environ)
        except Fallback:
            return self.next(environ, start_response)
        # From here the body is read: whatever goes on to the app gets it back.
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            opened = db.connect(reuse_if_open=True)
        except Exception:  # unreachable, or no connection free: the app answers (its 503)
            return self.next(environ, start_response)
        try:
            user, parsed = self._request(environ, body)
            if order_id is None:
                return self._place(environ, user, parsed, start_response)
            return self._move(environ, user, order_id, parsed, start_response)
        except Fallback:
            return self.next(environ, start_response)
        finally:
            if opened and not db.is_closed():
                db.close()

    def _body(self, environ: dict) -> bytes:
        """The request's body, when its headers are those of a request the fast path answers."""
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json" or "HTTP_TRANSFER_ENCODING" in environ:
            raise Fallback
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Fallback from None
        if not 0 < length <= self.limit:
            raise Fallback
        try:
            body = environ["wsgi.input"].read(length)
        except Exception:  # werkzeug's ClientDisconnected: the client went away mid-body
            body = b""
        if len(body) != length:  # the app reads it short and says so (400)
            environ["wsgi.input"] = io.BytesIO(body)
            raise Fallback
        return body

    def _request(self, environ: dict, body: bytes) -> tuple[User, dict[str, Any]]:
        """The token's user and the parsed body (a JSON object), as the app's guard checks them."""
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Fallback
        try:
            user = user_for_token(token.strip())
        except peewee.PeeweeException:  # nothing written yet: the app's guard meets it and answers
            raise Fallback from None
        if user is None:
            raise Fallback
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise Fallback from None
        if not isinstance(parsed, dict):
            raise Fallback
        return user, parsed

    def _place(self, environ: dict, user: User, parsed: dict, start_response: Callable) -> Iterable[bytes]:
        if user.role not in PLACE_ROLES:
            raise Fallback
        try:
            key = idempotency_key(environ.get("HTTP_IDEMPOTENCY_KEY"))
        except problems.Problem:
            raise Fallback from None
        new = _valid(schemas.OrderCreate, parsed)
        try:
            order, created = place_order(self.settings, user, new, key)
        except Exception as exc:
            return self._refused(start_response, exc)
        headers = [("Location", f"{ORDERS}/{order.id}")]
        if not created:
            headers.append(("Idempotent-Replayed", "true"))
        else:
            faults.kill_point("api.after_commit")  # committed; the client never hears of it
        return self._answer(start_response, "201 CREATED", order, user, headers)

    def _move(
        self, environ: dict, user: User, order_id: str, parsed: dict, start_response: Callable
    ) -> Iterable[bytes]:
        change = _valid(schemas.StatusChange, parsed)
        try:
            version = if_match(environ.get("HTTP_IF_MATCH"))
        except problems.Problem:
            raise Fallback from None
        try:
            order = move_order(self.settings, user, order_id, change, version)
        except Exception as exc:
            return self._refused(start_response, exc)
        return self._answer(start_response, "200 OK", order, user, [])

    def _answer(
        self, start_response: Callable, status: str, order: Order, user: User, headers: list[tuple[str, str]]
    ) -> Iterable[bytes]:
        """The order as the views answer it: its JSON for this user, its version as the ETag."""
        try:
            text = (order_text(order, user) + "\n").encode()
        except Exception as exc:
            return self._refused(start_response, exc)
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(text))),
                ("ETag", f'"{order.version}"'),
                *headers,
            ],
        )
        return [text]

    def _refused(self, start_response: Callable, exc: Exception) -> Iterable[bytes]:
        """What the service raised, answered as the app's error handlers answer it."""
        if isinstance(exc, errors.DomainError):
            problem = problems.from_domain(exc)
        elif isinstance(exc, peewee.OperationalError):
            problem = problems.database_unavailable(exc)
        else:
            problem = problems.unexpected()
        with self.app.app_context():
            response = problems.render(problem)
        start_response(response.status, response.headers.to_wsgi_list())
        return [response.get_data()]


def _valid(model: Any, parsed: dict) -> Any:
    try:
        return model.model_validate(parsed)
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        raise Fallback from None
