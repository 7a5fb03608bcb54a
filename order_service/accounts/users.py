"""Users, password hashing (argon2) and bearer tokens.

Tokens are random; only their SHA-256 is stored, so a leaked database does not
leak live tokens, and a token is revoked by deleting its row.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from order_service.config import Settings
from order_service.errors import TooManyAttempts
from order_service.store.db import Prepared, db
from order_service.store.inserts import RowReader, loaded
from order_service.store.models import LoginFailure, Token, User, new_id, utcnow

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


RECENT_FAILURES = 64


def check_throttle(username: str, address: str, settings: Settings) -> None:
    """TooManyAttempts (429) when ``address`` must still wait before trying ``username`` again.

    Failures count per client address and username, within ``login_window_seconds``. An
    address may fail ``login_max_failures`` times; after that each attempt waits 1 s after
    its last failure, then 2 s, 4 s... (doubling per failure) up to
    ``login_max_delay_seconds``. The right password is held to the same wait: answering it
    would let the attacker guess at full speed. Another address, the owner's, is not
    affected, so an attacker can slow down only itself. Past ``login_username_failures``
    for the username from every address (guessing spread over many addresses), an address
    may fail once before the waits begin: slower guessing, and still no lockout, since an
    address that has not failed is never held back. Unknown usernames are treated alike.
    """
    now = utcnow()
    since = now - timedelta(seconds=settings.login_window_seconds)
    recent = (LoginFailure.username == username) & (LoginFailure.at > since)
    # The newest first; past a few dozen the wait is at its longest anyway.
    times = [
        row.at
        for row in LoginFailure.select(LoginFailure.at)
        .where(recent & (LoginFailure.address == address))
        .order_by(LoginFailure.at.desc())
        .limit(RECENT_FAILURES)
    ]
    failures = len(times)
    if not failures:
        return
    free = settings.login_max_failures
    if failures < free:
        spread = LoginFailure.select(LoginFailure.at).where(recent).limit(settings.login_username_failures)
        if spread.count() < settings.login_username_failures:
            return
        free = 1
    delay = min(settings.login_max_delay_seconds, 2 ** min(failures - free, 30))
    wait = (times[0] + timedelta(seconds=delay) - now).total_seconds()
    if wait > 0:
        retry = math.ceil(wait)
        raise TooManyAttempts(
            f"{failures} failed logins for {username!r} from this address; try again in {retry} s",
            title="Too many failed logins",
            slug="login-throttled",
            retry_after=retry,
        )


def record_login(username: str, address: str, ok: bool, window_seconds: int) -> None:
    """Count a failure (and sweep the expired ones); a success clears the failures of this
    address for this username, and no one else's."""
    with db.atomic():
        mine = (LoginFailure.username == username) & (LoginFailure.address == address)
        if ok:
            LoginFailure.delete().where(mine).execute()
            return
        LoginFailure.create(username=username, address=address)
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


def revoke_all(user: User | str) -> None:
    """Revoke every token of a user (given as the row or its id)."""
    Token.delete().where(Token.user == user).execute()


# Every authenticated request looks its token up: one statement, its SQL built once per database.
_USER_FIELDS = User._meta.sorted_fields
_READ_USER = RowReader(_USER_FIELDS)
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
    user = loaded(User, _READ_USER(row[1:]))
    return Token.expires_at.python_value(row[0]), user


def user_for_token(token: str) -> User | None:
    """The active user a bearer token belongs to, or None when it is unknown, expired or
    revoked, or its user is deactivated. Read from the database every time."""
    found = _token_user(token_digest(token))
    if found is None or found[0] <= utcnow() or not found[1].active:
        return None
    return found[1]
