"""What an agent's device keeps on disk, and its worklist in memory.

The state dir (default ``~/.local/state/orderbus/agent-<username>/``, mode 0700)
holds, each file 0600 and replaced atomically:

- ``mqtt.json``: the device's broker login (issued once by
  ``POST /agents/<id>/mqtt-credentials``; rotated again only if the broker refuses it);
- ``seen.json``: the order ids the agent has looked at (the badge counts the others);
- ``queue.json``: actions not yet accepted by the API, oldest first, each with the
  time it happened on the device (and, for ``failed``, the reason);
- ``orders.json``: the last worklist's orders (id, status, customer), so that an order
  cancelled or reassigned while the device was off is still announced.

Replay is idempotent: each action carries the order version the agent saw and is
sent with ``If-Match: <version>``. If the order moved meanwhile (412, or 409) the
device reads the order: already at (or past) the target status means the action
was applied before (a replay after a lost answer) and counts as done; otherwise it
is dropped and reported as rejected. So replaying twice never moves an order twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..rest import Api, ApiError, ApiUnreachable

ORDER_OF = ("placed", "confirmed", "preparing", "ready", "picked_up", "delivered")
TERMINAL = {"delivered", "failed", "cancelled", "rejected"}
# What an agent may do next, by status (ARCHITECTURE.md, order lifecycle).
AGENT_NEXT = {"ready": ("picked_up",), "picked_up": ("delivered", "failed")}
# Why a delivery failed (PATCH /orders/<id>/status with "failure"); "other" needs a note.
FAILURE_REASONS = ("customer_absent", "wrong_address", "refused", "damaged", "other")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_state_dir(username: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "orderbus" / f"agent-{username}"


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def load(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except (FileNotFoundError, ValueError):
            return default

    def save(self, name: str, value: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(value, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class Outcome:
    action: dict[str, Any]
    result: str  # done | already_done | rejected
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"event": "action", "result": self.result, "detail": self.detail, **self.action}


class ActionQueue:
    """Actions on disk, replayed in order; see the module docstring for idempotency."""

    FILE = "queue.json"

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.needs_login = False
        # One sender at a time, and no append lost to a concurrent rewrite (the TUI's workers).
        self._lock = threading.RLock()

    def pending(self) -> list[dict[str, Any]]:
        return self.state.load(self.FILE, [])

    def add(
        self, order_id: str, status: str, version: int | None, failure: dict[str, str] | None = None
    ) -> dict[str, Any]:
        action = {
            "id": uuid.uuid4().hex,
            "order_id": order_id,
            "status": status,
            "version": version,
            "at": now_rfc3339(),
        }
        if failure:
            action["failure"] = failure
        with self._lock:
            self.state.save(self.FILE, [*self.pending(), action])
        return action

    def replay(self, api: Api) -> list[Outcome]:
        """Send pending actions in order; stop at the first that gets no answer.

        A 401 (the token expired) also stops, keeping the action: the caller logs in again."""
        outcomes: list[Outcome] = []
        with self._lock:
            while pending := self.pending():
                action = pending[0]
                try:
                    outcomes.append(self._send(api, action))
                except ApiUnreachable:
                    break
                except ApiError as exc:  # 401 only, see _send
                    self.needs_login = exc.status == 401
                    break
                self.state.save(self.FILE, [a for a in self.pending() if a["id"] != action["id"]])
        return outcomes

    @staticmethod
    def _send(api: Api, action: dict[str, Any]) -> Outcome:
        headers = {"If-Match": str(action["version"])} if action.get("version") else {}
        body = {"status": action["status"], "reason": f"on the agent's device at {action['at']}"}
        if action.get("failure"):
            body["failure"] = action["failure"]
        try:
            api.request("PATCH", f"/orders/{action['order_id']}/status", body, headers)
            return Outcome(action, "done")
        except ApiError as exc:
            if exc.status == 401:
                raise
            if exc.status not in (409, 412):
                return Outcome(action, "rejected", exc.explain())
            try:
                order = api.request("GET", f"/orders/{action['order_id']}")
            except ApiError as again:
                return Outcome(action, "rejected", again.explain())
            if reached(order["status"], action["status"]):
                return Outcome(action, "already_done", f"the order is {order['status']}")
            return Outcome(action, "rejected", exc.explain())


def reached(status: str, target: str) -> bool:
    """Is an order in ``status`` at or past ``target`` on the happy path?"""
    if status == target:
        return True
    if status in ORDER_OF and target in ORDER_OF:
        return ORDER_OF.index(status) > ORDER_OF.index(target)
    return False


class Worklist:
    """The agent's current orders and offers, and which of them are new (unseen)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.version = 0
        self.orders: dict[str, dict[str, Any]] = {}
        self.offers: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set(state.load("seen.json", []))
        # The orders of the last worklist of the previous run: what left the list while the
        # device was off is announced too.
        self._previous = {o["id"]: o for o in state.load("orders.json", [])}

    def apply(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Take a worklist; returns the orders that left it (finished, cancelled, reassigned...)."""
        self.version = payload.get("version", self.version)
        before = self.orders or self._previous
        self._previous = {}
        self.orders = {o["id"]: o for o in payload.get("orders", [])}
        if self.orders.keys() != before.keys():
            kept_fields = ("id", "status", "version", "customer")
            self.state.save("orders.json", [{k: o.get(k) for k in kept_fields} for o in self.orders.values()])
        self.offers = {o["id"]: o for o in payload.get("offers", [])}
        kept = self.seen & (self.orders.keys() | self.offers.keys())
        if kept != self.seen:
            self.seen = kept
            self.state.save("seen.json", sorted(self.seen))
        return [o for oid, o in before.items() if oid not in self.orders]

    def mark_seen(self, order_ids: list[str] | None = None) -> None:
        ids = set(order_ids) if order_ids else set(self.orders)
        self.seen |= ids & set(self.orders)
        self.state.save("seen.json", sorted(self.seen))

    @property
    def badge(self) -> int:
        return sum(1 for oid in self.orders if oid not in self.seen)

    def snapshot(self, agent_id: str) -> dict[str, Any]:
        return {
            "event": "worklist",
            "agent_id": agent_id,
            "version": self.version,
            "badge": self.badge,
            "orders": [
                {
                    "id": o["id"],
                    "status": o["status"],
                    "version": o["version"],
                    "new": o["id"] not in self.seen,
                    "customer": o.get("customer", {}),
                    "items": o.get("items", []),
                    "notes": o.get("notes", ""),
                    "eta": o.get("eta"),
                    "actions": list(AGENT_NEXT.get(o["status"], ())),
                }
                for o in self.orders.values()
            ],
            "offers": [
                {"id": o["id"], "status": o["status"], "version": o["version"]} for o in self.offers.values()
            ],
        }
