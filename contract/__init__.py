"""The public MQTT contract of orderbus: topics, payloads and the version rule.

Everything that travels over the broker is named, built and read here, and nowhere
else in Python: the service (which publishes), the bridges and the Python clients
(which subscribe) import this module; the admin dashboard's JavaScript keeps its own
copy (``clients/admin/js/contract.js``), and both are checked against
``docs/asyncapi.yaml`` by ``tests/test_contract.py``. It imports nothing of the service.

Topics::

    orders/new                  retained: the newest order, when created
    orders/<order id>/status    retained: the order's current state
    agents/<agent id>/assigned  retained: the agent's complete worklist
    agents/<agent id>/presence  retained: the device's online/offline (its last will)
    agents/<agent id>/location  retained: the agent's last position (dashboards only)
    agents/<agent id>/location/report  the device's position reports (the service reads them)
    catalog                     retained: the whole catalog, with its version
    customers/<user id>/orders  retained: a customer's own orders (its feed)
    orderbus/relay/epoch        retained: the relay's own marker (no client reads it)

Every order payload carries ``order.version`` and every worklist and customer feed
``version``: a subscriber keeps the highest it has seen per order (per worklist, per
customer) and drops anything
older or equal (:class:`VersionGate`); an empty retained payload on an order's topic
means the order finished and its retained state was cleared.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from typing import Any

SCHEMA = 1

ORDERS_NEW = "orders/new"
ORDERS_ALL = "orders/#"
AGENTS_ALL = "agents/#"
AGENT_PRESENCE_FILTER = "agents/+/presence"
AGENT_ASSIGNED_FILTER = "agents/+/assigned"
AGENT_LOCATION_FILTER = "agents/+/location"
AGENT_LOCATION_REPORT_FILTER = "agents/+/location/report"
# A device's position report: at most this many bytes (larger ones are dropped unread).
LOCATION_REPORT_MAX_BYTES = 2048
CUSTOMER_ORDERS_FILTER = "customers/+/orders"

# What a customer's feed holds: its active orders and those finished within this window,
# the newest first, at most this many.
CUSTOMER_FEED_WINDOW_SECONDS = 24 * 3600
CUSTOMER_FEED_LIMIT = 20

PRESENCE_STATES = ("online", "offline")

# The catalog: the body of GET /api/v1/catalog, republished on every change; its
# ``version`` rises with each, so a subscriber keeps the highest it has seen.
CATALOG = "catalog"

# The relay's own topic: only the service account may read or write it. Its retained
# message tells a reconnecting relay whether the broker still holds what it published
# (see ``relay_epoch``); a non-retained probe there marks the end of the retained replay.
RELAY_EPOCH = "orderbus/relay/epoch"

# --- topics -------------------------------------------------------------------------------


def order_status(order_id: str) -> str:
    return f"orders/{order_id}/status"


def agent_assigned(agent_id: str) -> str:
    return f"agents/{agent_id}/assigned"


def agent_presence(agent_id: str) -> str:
    return f"agents/{agent_id}/presence"


def agent_location(agent_id: str) -> str:
    return f"agents/{agent_id}/location"


def agent_location_report(agent_id: str) -> str:
    return f"agents/{agent_id}/location/report"


def customer_orders(user_id: str) -> str:
    return f"customers/{user_id}/orders"


def _part(topic: str, first: str, last: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == first and parts[2] == last and parts[1]:
        return parts[1]
    return None


def order_from_status_topic(topic: str) -> str | None:
    return _part(topic, "orders", "status")


def agent_from_assigned_topic(topic: str) -> str | None:
    return _part(topic, "agents", "assigned")


def agent_from_presence_topic(topic: str) -> str | None:
    return _part(topic, "agents", "presence")


def agent_from_location_report_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "agents" and parts[1] and parts[2:] == ["location", "report"]:
        return parts[1]
    return None


def customer_from_orders_topic(topic: str) -> str | None:
    return _part(topic, "customers", "orders")


# --- payloads -------------------------------------------------------------------------------


def envelope(event: str, occurred_at: str) -> dict[str, Any]:
    """The fields every event payload starts with."""
    return {"schema": SCHEMA, "event": event, "event_id": uuid.uuid4().hex, "occurred_at": occurred_at}


def dumps(payload: dict[str, Any]) -> str:
    """A payload as it goes on the wire: compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def loads(payload: bytes) -> dict[str, Any] | None:
    """A message's payload: the JSON object, or None for an empty (cleared) one.
    Raises ValueError for anything that is not a JSON object."""
    if not payload:
        return None
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("the payload is not a JSON object")
    return body


def presence(agent_id: str, state: str, at: str) -> bytes:
    """A device's presence payload (``agents/<id>/presence``): ``state`` is one of
    :data:`PRESENCE_STATES`, ``at`` an RFC 3339 UTC time."""
    if state not in PRESENCE_STATES:
        raise ValueError(f"presence state {state!r}: use one of {', '.join(PRESENCE_STATES)}")
    return dumps({"agent_id": agent_id, "state": state, "at": at}).encode()


def relay_epoch(epoch: str, through: int) -> bytes:
    """The relay's marker (``orderbus/relay/epoch``, retained): the database's epoch id and
    the id of the last outbox row the broker had acknowledged when it was published."""
    return dumps({"epoch": epoch, "through": through}).encode()


def relay_probe(nonce: str) -> bytes:
    """A probe on ``orderbus/relay/epoch`` (not retained): its return ends the retained replay."""
    return dumps({"probe": nonce}).encode()


def parse_relay_epoch(payload: bytes | None) -> tuple[str, int] | None:
    """(epoch, through) of a retained marker; None when absent or not a marker."""
    try:
        body = loads(payload or b"")
    except ValueError:
        return None
    if body is None:
        return None
    epoch, through = body.get("epoch"), body.get("through")
    if not isinstance(epoch, str) or not isinstance(through, int) or isinstance(through, bool):
        return None
    return epoch, through


def classify(topic: str, payload: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """(kind, key, version) of a message: kind ``order`` (key: the order id), ``worklist``
    (the agent id), ``presence`` (the agent id), ``customer`` (a customer's feed: the
    customer's user id), ``catalog`` (key: ``catalog``) or ``other``."""
    order = payload.get("order")
    if topic.startswith("orders/") and isinstance(order, dict):
        version = order.get("version")
        return "order", str(order.get("id")), version if isinstance(version, int) else None
    if (agent := agent_from_assigned_topic(topic)) is not None:
        version = payload.get("version")
        return "worklist", agent, version if isinstance(version, int) else None
    if (agent := agent_from_presence_topic(topic)) is not None:
        return "presence", agent, None
    if topic == CATALOG:
        version = payload.get("version")
        return "catalog", CATALOG, version if isinstance(version, int) else None
    if (customer := customer_from_orders_topic(topic)) is not None:
        version = payload.get("version")
        return "customer", customer, version if isinstance(version, int) else None
    return "other", None, None


# --- the version rule ---------------------------------------------------------------------------


class VersionGate:
    """The highest version held per key (an order id, a worklist's agent...): :meth:`offer`
    says whether a version is news and holds it if so. Thread-safe; it holds at most
    ``limit`` keys, forgetting the least recently changed first."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._held: OrderedDict[Any, int] = OrderedDict()
        self._lock = threading.Lock()

    def offer(self, key: Any, version: int) -> bool:
        with self._lock:
            if version <= self._held.get(key, 0):
                return False
            self._held[key] = version
            self._held.move_to_end(key)
            if len(self._held) > self.limit:
                self._held.popitem(last=False)
            return True

    def held(self, key: Any) -> int:
        with self._lock:
            return self._held.get(key, 0)

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._held

    def forget(self, key: Any) -> None:
        with self._lock:
            self._held.pop(key, None)
