"""The domain's refusals, typed: what a rule said no to, never how HTTP spells it.

Domain code (orders, dispatch, accounts) raises these; the API maps each kind to
problem+json in one place (``api/problems.py``). Every room may import this module;
it imports nothing of the service.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses. ``slug`` names the kind of problem for clients;
    ``extra`` carries the fields a client needs to recover (e.g. the allowed moves)."""

    title = "Refused"

    def __init__(self, detail: str, *, slug: str, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.slug = slug
        if title is not None:
            self.title = title
        self.extra = extra


class NotFound(DomainError):
    """No such ``what`` (an order, an agent, a webhook endpoint, ...)."""

    title = "Not Found"

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"no {what} {key!r}", slug=f"{what.replace(' ', '-')}-not-found")
        self.what, self.key = what, key


class InvalidField(DomainError):
    """One field of the request breaks a rule the schema cannot express."""

    title = "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", slug="validation-error", errors=[{"field": field, "message": message}]
        )
        self.field = field


class IllegalTransition(DomainError):
    """The lifecycle does not allow this move from the order's current status."""

    title = "Transition not allowed"

    def __init__(self, current: str, target: str, allowed: list[str]) -> None:
        super().__init__(
            f"an order in {current!r} cannot move to {target!r}",
            slug="invalid-transition",
            status_now=current,
            allowed=allowed,
        )


class StaleVersion(DomainError):
    """``If-Match`` named a version that is no longer the current one."""

    title = "Precondition Failed"

    def __init__(self, order_id: str, current: int, given: int) -> None:
        super().__init__(
            f"order {order_id} is at version {current}, not {given}; reload it and retry",
            slug="stale-version",
            current_version=current,
        )


class Forbidden(DomainError):
    """The caller's role may not do this."""

    title = "Forbidden"

    def __init__(self, detail: str, *, slug: str = "forbidden", **extra: Any) -> None:
        super().__init__(detail, slug=slug, **extra)


class Conflict(DomainError):
    """The request is well formed, but the state it meets refuses it (not assignable,
    no agent, an offer already answered, ...). ``title`` says which."""

    title = "Conflict"


class Unprocessable(DomainError):
    """The request contradicts an earlier one (an idempotency key reused with another body)."""

    title = "Unprocessable"


class Unauthorized(DomainError):
    """No valid credentials."""

    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, slug="unauthorized")


class TooManyAttempts(DomainError):
    """Slow down: try again in ``retry_after`` seconds."""

    title = "Too Many Requests"

    def __init__(self, detail: str, *, retry_after: int, slug: str, title: str | None = None) -> None:
        super().__init__(detail, slug=slug, title=title)
        self.retry_after = retry_after
