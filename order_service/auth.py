"""Users, password hashing (argon2) and bearer tokens.

Tokens are random; only their SHA-256 is stored, so a leaked database does not
leak live tokens, and a token is revoked by deleting its row.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, request

from .db import Prepared, db
from .models import LoginFailure, Token, User, new_id, utcnow
from .problems import Problem

_hasher = PasswordHasher()
# Verified against when the username is unknown, so timing does not reveal it.
_DUMMY_HASH = _hasher.hash("orderbus-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and bool(
            user and user.active
        )
    except (VerificationError, InvalidHashError):
        return False


def create_user(username: str, password: str, role: str, display_name: str = "") -> User:
    return User.create(
        id=new_id("usr"),
        username=username,
        password_hash=hash_password(password),
        role=role,
        display_name=display_name,
    )


def check_throttle(username: str, max_failures: int, window_seconds: int) -> None:
    """429 when ``username`` had ``max_failures`` failed logins within the window.

    Counted per username, known or not, so guessing one account's password is slow
    whoever tries it; the answer is the same for unknown names, which reveals nothing.
    The price is that an attacker can keep one account's owner waiting for a window.
    """
    since = utcnow() - timedelta(seconds=window_seconds)
    recent = (
        LoginFailure.select(LoginFailure.at)
        .where((LoginFailure.username == username) & (LoginFailure.at > since))
        .order_by(LoginFailure.at.desc())
        .limit(max_failures)
    )
    times = [row.at for row in recent]
    if len(times) >= max_failures:
        retry = max(1, int((times[-1] - since).total_seconds()) + 1)
        raise Problem(
            429,
            "Too many failed logins",
            f"{max_failures} failed logins for {username!r} within {window_seconds} s; "
            f"try again in {retry} s",
            slug="login-throttled",
            headers={"Retry-After": str(retry)},
        )


def record_login(username: str, ok: bool, window_seconds: int) -> None:
    """Count a failure (and sweep old ones); a success clears the username's failures."""
    with db.atomic():
        if ok:
            LoginFailure.delete().where(LoginFailure.username == username).execute()
            return
        LoginFailure.create(username=username)
        cutoff = utcnow() - timedelta(seconds=window_seconds)
        LoginFailure.delete().where(LoginFailure.at <= cutoff).execute()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: User, ttl_seconds: int) -> tuple[str, int]:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with db.atomic():
        # Each login sweeps the user's expired tokens, so the table stays small.
        Token.delete().where((Token.user == user) & (Token.expires_at <= now)).execute()
        Token.create(
            token_hash=token_digest(token),
            user=user,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    return token, ttl_seconds


def revoke_token(token: str) -> None:
    Token.delete().where(Token.token_hash == token_digest(token)).execute()


def revoke_all(user: User) -> None:
    Token.delete().where(Token.user == user).execute()


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="orderbus"'})


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
        raise _unauthorized("send 'Authorization: Bearer <token>' (POST /api/v1/auth/token)")
    found = _token_user(token_digest(token))
    if found is None or found[0] <= utcnow() or not found[1].active:
        raise _unauthorized("the token is invalid, expired or revoked; log in again")
    g.user = found[1]
    return found[1]


# Every authenticated request looks its token up: one statement, its SQL built once per database.
_USER_FIELDS = User._meta.sorted_fields
_TOKEN_USER = Prepared(
    lambda: Token.select(Token.expires_at, *_USER_FIELDS).join(User).where(Token.token_hash == "")
)


def _token_user(digest: str) -> tuple[datetime, User] | None:
    """(expires_at, user) of a stored token, read from the database every time: a token
    revoked or a user deactivated by any process is refused at once."""
    rows = _TOKEN_USER.execute(digest)
    row = rows[0] if rows else None
    if row is None:
        return None
    user = User(**{f.name: f.python_value(value) for f, value in zip(_USER_FIELDS, row[1:], strict=True)})
    user._dirty.clear()
    return Token.expires_at.python_value(row[0]), user


def require(*roles: str) -> Callable:
    """View decorator: authenticate, then require one of ``roles`` (any role when empty)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if roles and user.role not in roles:
                raise Problem(
                    403, "Forbidden", f"this needs the role {' or '.join(roles)}; you are {user.role}"
                )
            return view(*args, **kwargs)

        return wrapper

    return decorator


def token_ttl() -> int:
    return current_app.config["ORDERBUS"].token_ttl_seconds
