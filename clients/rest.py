"""A tiny REST client for the orderbus API (stdlib only), shared by the clients.

Errors are typed: :class:`ApiUnreachable` when no answer came (connection refused,
timeout, an answer cut off), :class:`ApiError` with the status and the problem+json body otherwise.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

DEFAULT_API = "http://127.0.0.1:5000/api/v1"


class ApiUnreachable(Exception):
    """The API did not answer."""


class ApiError(Exception):
    """The API answered with an error status and (usually) a problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")

    def explain(self) -> str:
        """One or a few lines a person can act on."""
        p = self.problem
        lines = [f"{p.get('title') or 'Error'} ({self.status}): {p.get('detail') or ''}".rstrip(": ")]
        for err in p.get("errors") or []:
            lines.append(f"  - {err.get('field', '?')}: {err.get('message', '')}")
        if p.get("allowed") is not None:
            if self.status == 403:
                lines.append(f"  you may: {', '.join(p['allowed']) or 'nothing more on this order'}")
            else:
                lines.append(f"  allowed next: {', '.join(p['allowed']) or 'none (the order is finished)'}")
        hint = {
            401: "  check the username and password (or log in again: the token may have expired)",
            403: "  this account may not do that",
            404: "  check the id",
            412: "  the order changed meanwhile; show it again and retry",
        }.get(self.status)
        if hint:
            lines.append(hint)
        return "\n".join(lines)


class Api:
    def __init__(self, base: str = DEFAULT_API, token: str | None = None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: dict | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                raw = response.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                problem = json.loads(raw) if raw else {}
            except ValueError:
                problem = {"title": exc.reason, "detail": raw.decode(errors="replace")[:200]}
            raise ApiError(exc.code, problem if isinstance(problem, dict) else {}) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: the answer was cut off (a worker killed mid-answer), so none came.
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"{self.base}: {reason}") from None

    def login(self, username: str, password: str) -> dict[str, Any]:
        answer = self.request("POST", "/auth/token", {"username": username, "password": password})
        self.token = answer["access_token"]
        return answer


DASHBOARD_LOGINS_PER_TOKEN = 16  # the service keeps a bearer token's 16 newest dashboard logins


def dashboard_logins(api_url: str, username: str, password: str, count: int) -> list[dict[str, Any]]:
    """``count`` read-only broker logins of an admin, one per dashboard (page), as pages get
    them: both brokers use a login's username as its client id, so two connections sharing a
    login would take each other's place. One log-in per 16 (a token keeps its 16 newest), and
    ``POST /auth/mqtt-credentials`` for the rest."""
    logins: list[dict[str, Any]] = []
    while len(logins) < count:
        api = Api(api_url)
        logins.append(api.login(username, password)["mqtt"])
        for _ in range(min(DASHBOARD_LOGINS_PER_TOKEN - 1, count - len(logins))):
            logins.append(api.request("POST", "/auth/mqtt-credentials"))
    return logins


def place_order(
    api: Api, body: dict, *, key: str | None = None, attempts: int = 5, backoff: float = 0.3
) -> dict[str, Any]:
    """POST /orders, safe to retry: one Idempotency-Key for every attempt, so an answer lost
    on the way back (a dropped connection, a crashed worker, a 502/503) is retried without
    placing the order twice; the server returns the original order instead."""
    key = key or str(uuid.uuid4())
    for attempt in range(1, attempts + 1):
        try:
            return api.request("POST", "/orders", body, headers={"Idempotency-Key": key})
        except ApiUnreachable:
            if attempt == attempts:
                raise
        except ApiError as exc:
            if exc.status not in (502, 503, 504) or attempt == attempts:
                raise
        time.sleep(backoff * attempt)
    raise AssertionError("not reached: the last attempt returns or raises")
