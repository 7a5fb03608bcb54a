"""Who a socket is: its bearer token, checked by the REST API, and the rooms that allows.

The bridge knows tokens only as the API does: ``GET /api/v1/auth/me`` with the token
answers the user (its role and, for an agent, its agent id), or 401. Answers are reused
for a short while (:class:`TokenCache`: bounded, a few seconds, never longer than the
recheck period), so a crowd of sockets reconnecting at once costs the API one request
per token. The periodic recheck always asks the API and replaces what is cached: a
token the API refuses is refused from then on, so a revoked token cannot come back
from the cache.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ADMIN, DELIVERY, CUSTOMER = "admin", "delivery", "customer"
# Longer than any token the API issues; a longer one is refused without asking.
MAX_TOKEN_LENGTH = 512


def agent_room(agent_id: str) -> str:
    return f"{DELIVERY}:{agent_id}"


def customer_room(user_id: str) -> str:
    return f"{CUSTOMER}:{user_id}"


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str
    agent_id: str | None = None

    def may_join(self, room: str) -> bool:
        """Admins may watch every room; an agent only ``delivery`` and its own room; a
        customer only its own room."""
        if self.role == "admin":
            return room in (ADMIN, DELIVERY) or room.startswith((f"{DELIVERY}:", f"{CUSTOMER}:"))
        if self.role == "agent" and self.agent_id:
            return room in (DELIVERY, agent_room(self.agent_id))
        if self.role == "customer":
            return room == customer_room(self.user_id)
        return False

    def default_rooms(self) -> list[str]:
        if self.role == "admin":
            return [ADMIN]
        if self.role == "agent" and self.agent_id:
            return [DELIVERY, agent_room(self.agent_id)]
        if self.role == "customer":
            return [customer_room(self.user_id)]
        return []


class ApiUnavailable(Exception):
    """The API did not answer whether a token is valid (down, unreachable, or a 5xx)."""


class TokenCache:
    """The API's answer per token (an :class:`Identity`, or None for refused), each kept
    ``ttl`` seconds; at most ``size`` tokens, the oldest answer dropped first."""

    def __init__(self, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._answers: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    def get(self, token: str) -> tuple[bool, Identity | None]:
        """(found, answer); an answer older than ``ttl`` is not found."""
        held = self._answers.get(token)
        if held is None:
            return False, None
        if held[0] <= self.clock():
            del self._answers[token]
            return False, None
        return True, held[1]

    def put(self, token: str, who: Identity | None) -> None:
        if self.ttl <= 0:
            return
        self._answers.pop(token, None)
        self._answers[token] = (self.clock() + self.ttl, who)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


class TokenChecker:
    """Asks ``<api_url>/auth/me`` who a token is; one request at a time per token."""

    def __init__(self, api_url: str, cache: TokenCache, timeout: float = 5.0) -> None:
        self.url = f"{api_url.rstrip('/')}/auth/me"
        self.cache = cache
        self.timeout = timeout
        self._asking: dict[str, asyncio.Future] = {}

    async def identify(self, token: str) -> Identity | None:
        """The user behind ``token`` (None if the API refuses it), from the cache if fresh.
        Raises :class:`ApiUnavailable` when the API gives no answer."""
        found, who = self.cache.get(token)
        return who if found else await self.ask(token)

    async def ask(self, token: str) -> Identity | None:
        """Ask the API, whatever the cache holds, and cache its answer."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        asking = self._asking.get(token)
        if asking is None:  # sockets of one token connecting together share one request
            asking = asyncio.ensure_future(asyncio.to_thread(self._ask, token))
            self._asking[token] = asking
            asking.add_done_callback(lambda done: self._done(token, done))
        who = await asyncio.shield(asking)
        self.cache.put(token, who)
        return who

    def _done(self, token: str, done: asyncio.Future) -> None:
        self._asking.pop(token, None)
        if not done.cancelled():
            done.exception()  # retrieved: every socket that waited on it has its own copy

    def _ask(self, token: str) -> Identity | None:
        request = urllib.request.Request(
            self.url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read(64 * 1024))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 401:
                return None
            raise ApiUnavailable(f"the API at {self.url} answered {exc.code}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, not JSON
            raise ApiUnavailable(f"the API at {self.url} does not answer ({exc})") from None
        try:
            agent_id = body.get("agent_id")
            return Identity(str(body["id"]), str(body["role"]), str(agent_id) if agent_id else None)
        except (AttributeError, KeyError) as exc:
            raise ApiUnavailable(f"the API at {self.url} answered without {exc}") from None
