"""Who is asking: the bearer token of a request, its user, and the role a view requires.

HTTP only; the tokens themselves (issuing, hashing, lookup) live in ``accounts.users``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from order_service.accounts.users import user_for_token
from order_service.errors import Forbidden, Unauthorized
from order_service.store.models import User


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def current_user() -> User:
    """The authenticated user of this request, or a 401 problem."""
    if "user" in g:
        return g.user
    token = bearer_token()
    if token is None:
        raise Unauthorized("send 'Authorization: Bearer <token>' (POST /api/v1/auth/token)")
    user = user_for_token(token)
    if user is None:
        raise Unauthorized("the token is invalid, expired or revoked; log in again")
    g.user = user
    return user


def require(*roles: str) -> Callable:
    """View decorator: authenticate, then require one of ``roles`` (any role when empty)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if roles and user.role not in roles:
                raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {user.role}")
            return view(*args, **kwargs)

        return wrapper

    return decorator


def token_ttl() -> int:
    return current_app.config["ORDERBUS"].token_ttl_seconds
