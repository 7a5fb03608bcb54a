"""Helpers shared by the REST test modules: problem checks, database snapshots, walks.

Everything here reads the real SQLite file the fixtures create; nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient

from order_service import lifecycle
from order_service.catalog.model import CatalogState, Category, Item, Option
from order_service.store.db import db
from order_service.store.models import (
    Agent,
    DispatchSettingsRow,
    IdempotencyKey,
    Order,
    OrderAlert,
    OrderHistory,
    OrderItem,
    OrderNumber,
    OrderOffer,
    Outbox,
    User,
)
from tests.conftest import Actor

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"

# The tables a write touches (Token is left out: logging in writes one).
COUNTED = (Order, OrderItem, OrderHistory, Outbox, IdempotencyKey, User, Agent)
COUNTED += (OrderOffer, OrderAlert, DispatchSettingsRow, Category, Item, Option, OrderNumber)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that, or fail after
    ``timeout`` seconds naming ``what`` and the last value. What a test waits on instead of
    sleeping: a row, a status, a log line, a port."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(interval)


def assert_problem(response, status: int, field: str | None = None) -> dict:
    """An RFC 9457 problem with this status; when ``field`` is given, an error names it."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == PROBLEM_JSON, response.headers.get("Content-Type")
    body = json.loads(response.get_data(as_text=True))
    assert body["status"] == status, body
    assert body.get("title"), body
    assert body.get("type"), body
    if field is not None:
        fields = [e.get("field") for e in body.get("errors") or []]
        assert field in fields, (field, body)
    return body


def db_state() -> dict[str, Any]:
    """Row counts of every written table plus each order's and agent's mutable state."""
    with db.connection_context():
        state: dict[str, Any] = {model.__name__: model.select().count() for model in COUNTED}
        state["orders"] = sorted(
            Order.select(Order.id, Order.version, Order.status, Order.agent, Order.updated_at).tuples()
        )
        state["agents"] = sorted(Agent.select(Agent.id, Agent.worklist_version, Agent.active).tuples())
        state["users"] = sorted(User.select(User.id, User.active).tuples())
        state["catalog"] = sorted(CatalogState.select(CatalogState.version).tuples())
        state["numbers"] = sorted(OrderNumber.select().tuples())
    return state


def counts() -> dict[str, int]:
    """Row counts only, by model name."""
    with db.connection_context():
        return {model.__name__: model.select().count() for model in COUNTED}


@contextmanager
def nothing_written() -> Iterator[None]:
    """Assert that the block changes no row of the order, outbox, key, user or agent tables."""
    before = db_state()
    yield
    after = db_state()
    assert after == before, {key: (before[key], after[key]) for key in before if before[key] != after[key]}


def outbox(**where: Any) -> list[dict[str, Any]]:
    """Outbox rows in id order (optionally filtered by column), payload parsed."""
    with db.connection_context():
        query = Outbox.select().order_by(Outbox.id)
        for column, value in where.items():
            query = query.where(getattr(Outbox, column) == value)
        return [
            {
                "id": row.id,
                "event": row.event,
                "event_id": row.event_id,
                "kind": row.kind,
                "topic": row.topic,
                "order_id": row.order_id,
                "agent_id": row.agent_id,
                "payload": json.loads(row.payload),
            }
            for row in query
        ]


def all_published() -> bool:
    """Every outbox row marked published: the relay has had each acknowledged by the broker."""
    with db.connection_context():
        return not Outbox.unpublished(1).exists()


def max_outbox_id() -> int:
    with db.connection_context():
        row = Outbox.select().order_by(Outbox.id.desc()).first()
        return row.id if row else 0


def outbox_after(outbox_id: int) -> list[dict[str, Any]]:
    return [row for row in outbox() if row["id"] > outbox_id]


def latest_worklist(agent_id: str) -> dict[str, Any]:
    rows = outbox(topic=f"agents/{agent_id}/assigned")
    assert rows, f"no worklist row for {agent_id}"
    return rows[-1]["payload"]


def history_rows(order_id: str) -> list[OrderHistory]:
    with db.connection_context():
        return list(OrderHistory.select().where(OrderHistory.order == order_id).order_by(OrderHistory.id))


def get_order(client: FlaskClient, actor: Actor, order_id: str) -> dict:
    response = client.get(f"{API}/orders/{order_id}", headers=actor.headers)
    assert response.status_code == 200, response.json
    return response.json


def set_status(client: FlaskClient, actor: Actor, order_id: str, status: str, **extra: Any):
    return client.patch(
        f"{API}/orders/{order_id}/status", json={"status": status, **extra}, headers=actor.headers
    )


def assign(client: FlaskClient, admin: Actor, order_id: str, agent_id: str, **headers: str):
    return client.put(
        f"{API}/orders/{order_id}/agent",
        json={"agent_id": agent_id},
        headers={**admin.headers, **headers},
    )


# The shortest walk from ``placed`` to each status.
PATHS: dict[str, list[str]] = {
    "placed": [],
    "confirmed": ["confirmed"],
    "preparing": ["confirmed", "preparing"],
    "ready": ["confirmed", "preparing", "ready"],
    "picked_up": ["confirmed", "preparing", "ready", "picked_up"],
    "delivered": ["confirmed", "preparing", "ready", "picked_up", "delivered"],
    "failed": ["confirmed", "preparing", "ready", "picked_up", "failed"],
    "cancelled": ["cancelled"],
    "rejected": ["rejected"],
}
assert set(PATHS) == set(lifecycle.STATUSES)

# What a move needs besides the status: a failed delivery must say why.
MOVE_EXTRA: dict[str, dict[str, Any]] = {"failed": {"failure": {"reason": "customer_absent"}}}


def walk_to(
    client: FlaskClient,
    admin: Actor,
    order_id: str,
    target: str,
    agent: Actor | None = None,
) -> dict:
    """Move an order on from its status to ``target`` the legal way; ``agent`` is assigned
    on confirm and makes the agent's moves. Returns the order as the last response gave it."""
    order = get_order(client, admin, order_id)
    path = PATHS[target]
    if order["status"] != "placed":
        assert order["status"] in path, (order["status"], target)
        path = path[path.index(order["status"]) + 1 :]
    for status in path:
        actor = agent if status in lifecycle.NEEDS_AGENT else admin
        assert actor is not None, f"walking to {target} needs an agent"
        response = set_status(client, actor, order_id, status, **MOVE_EXTRA.get(status, {}))
        assert response.status_code == 200, response.json
        order = response.json
        if status == "confirmed" and agent is not None:
            response = assign(client, admin, order_id, agent.agent_id)
            assert response.status_code == 200, response.json
            order = response.json
    assert order["status"] == target
    return order


class StatementCounter(logging.Handler):
    """Counts the SQL statements peewee runs while attached (peewee logs each at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    @contextmanager
    def attached(self) -> Iterator[StatementCounter]:
        logger = logging.getLogger("peewee")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
