"""One error shape for the whole API: RFC 9457 ``application/problem+json``.

Domain code raises the typed errors of ``order_service.errors``; views raise those or a
:class:`Problem` for what is about HTTP itself. This module is the one place that maps
both to a response. Validation errors name the field (``errors[].field`` as a dotted
path, e.g. ``items.0.quantity``).
"""

from __future__ import annotations

import logging
from typing import Any

import peewee
from flask import Flask, Response, json
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from order_service import errors

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "https://orderbus.dev/problems/"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body = {
            "type": PROBLEM_TYPE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        body.update(self.extra)
        return body


# Each kind of domain refusal, as HTTP says it.
STATUS: dict[type[errors.DomainError], int] = {
    errors.NotFound: 404,
    errors.InvalidField: 422,
    errors.IllegalTransition: 409,
    errors.StaleVersion: 412,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.Unprocessable: 422,
    errors.Unauthorized: 401,
    errors.TooManyAttempts: 429,
}


def from_domain(exc: errors.DomainError) -> Problem:
    status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
    headers = {}
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="orderbus"'
    elif isinstance(exc, errors.TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    return Problem(status, exc.title, exc.detail, slug=exc.slug, headers=headers, **exc.extra)


def field_problem(field: str, message: str, status: int = 422) -> Problem:
    problem = from_domain(errors.InvalidField(field, message))
    problem.status = status
    return problem


def render(problem: Problem) -> Response:
    response = Response(
        json.dumps(problem.body()), status=problem.status, mimetype="application/problem+json"
    )
    for key, value in problem.headers.items():
        response.headers[key] = value
    return response


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"field": _field_path(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(422, "Invalid request", detail, slug="validation-error", errors=errors)


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's hook: a request that fails its pydantic model."""
    return render(validation_problem(exc))


def init_app(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return render(exc)

    @app.errorhandler(errors.DomainError)
    def _domain(exc: errors.DomainError) -> Response:
        return render(from_domain(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> ResponseReturnValue:
        if exc.response is not None and exc.response.mimetype == "application/problem+json":
            return exc.response
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return render(Problem(status, exc.name, exc.description or "", headers=headers))

    @app.errorhandler(peewee.OperationalError)
    def _database_busy(exc: peewee.OperationalError) -> Response:
        return render(database_unavailable(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return render(unexpected())


def database_unavailable(exc: peewee.OperationalError) -> Problem:
    """The database is busy (no turn to write in time) or unreachable. The transaction did
    not commit, so nothing was written: the client may retry (POST /orders with its
    Idempotency-Key). A fault of the service, not of the request."""
    logger.warning("database unavailable: %s", exc)
    return Problem(
        503,
        "Service Unavailable",
        "the database is busy or unreachable; nothing was written, retry shortly",
        slug="database-unavailable",
        headers={"Retry-After": "1"},
    )


def unexpected() -> Problem:
    """A fault of ours (logged with its traceback, from the ``except`` block that calls this)."""
    logger.exception("unhandled error")
    return Problem(500, "Internal Server Error", "an unexpected error occurred")
