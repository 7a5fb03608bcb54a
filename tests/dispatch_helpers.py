"""Helpers for the dispatch tests: agent devices on the real broker, REST shortcuts, the clock.

A :class:`Device` is what an agent's handheld does for presence: a paho client
with a stable id that publishes ``online`` (retained) on its own
``agents/<id>/presence``, registers ``offline`` as its last will, and re-publishes
``online`` as its heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from flask.testing import FlaskClient

from order_service.dispatch.auto import TickReport, tick
from order_service.store.models import rfc3339
from tests.conftest import Actor
from tests.helpers import API, wait_until


def utc(text: str) -> datetime:
    """An RFC 3339 timestamp of the API as naive UTC (the database's representation)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run_tick(app, at: datetime) -> TickReport:
    """One dispatch tick as of ``at`` (what the relay does every second, with a chosen clock)."""
    return tick(app.config["ORDERBUS"], now=at)


class Device:
    """An agent's device: presence on the real broker."""

    def __init__(self, broker, agent_id: str) -> None:
        self.agent_id = agent_id
        self.topic = f"agents/{agent_id}/presence"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{agent_id}")
        self.client.will_set(self.topic, self._payload("offline"), qos=1, retain=True)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _payload(self, state: str) -> str:
        return json.dumps({"agent_id": self.agent_id, "state": state, "at": rfc3339(now())})

    def publish(self, state: str) -> None:
        info = self.client.publish(self.topic, self._payload(state), qos=1, retain=True)
        info.wait_for_publish(5)

    def online(self) -> None:
        self.publish("online")

    heartbeat = online

    def offline(self) -> None:
        self.publish("offline")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def eventually(probe: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy; return it, or fail after ``timeout``."""
    return wait_until(probe, timeout, interval=interval)


def agent_presence(client: FlaskClient, admin: Actor, agent_id: str) -> dict:
    agents = client.get(f"{API}/agents", headers=admin.headers).json["agents"]
    return next(a for a in agents if a["id"] == agent_id)["presence"]


def wait_presence(client: FlaskClient, admin: Actor, agent_id: str, state: str) -> dict:
    return eventually(
        lambda: (p := agent_presence(client, admin, agent_id)) and p["state"] == state and p, timeout=5
    )


def history(client: FlaskClient, actor: Actor, order_id: str) -> list[dict]:
    response = client.get(f"{API}/orders/{order_id}/history", headers=actor.headers)
    assert response.status_code == 200, response.json
    return response.json["history"]


def patch_settings(client: FlaskClient, admin: Actor, **values: Any) -> dict:
    response = client.patch(f"{API}/settings/dispatch", json=values, headers=admin.headers)
    assert response.status_code == 200, response.json
    return response.json


def offer(client: FlaskClient, admin: Actor, order_id: str, *agents: Actor, **extra: Any):
    return client.post(
        f"{API}/orders/{order_id}/offer",
        json={"agent_ids": [a.agent_id for a in agents], **extra},
        headers=admin.headers,
    )


def accept(client: FlaskClient, agent: Actor, order_id: str):
    return client.post(f"{API}/orders/{order_id}/offer/accept", headers=agent.headers)


def decline(client: FlaskClient, agent: Actor, order_id: str, reason: str = ""):
    body = {"reason": reason} if reason else None
    return client.post(f"{API}/orders/{order_id}/offer/decline", json=body, headers=agent.headers)


def is_event(topic: str, event: str, **order_fields: Any) -> Callable:
    """A Subscriber predicate: this event on this topic, with these order fields."""

    def match(received) -> bool:
        body = received.json
        if received.topic != topic or not body or body.get("event") != event:
            return False
        return all(body["order"].get(k) == v for k, v in order_fields.items())

    return match


def worklist_where(agent_id: str, predicate: Callable[[dict], bool]) -> Callable:
    """A Subscriber predicate: a worklist of this agent for which ``predicate`` holds."""

    def match(received) -> bool:
        body = received.json
        return received.topic == f"agents/{agent_id}/assigned" and bool(body) and predicate(body)

    return match


def a_tick_has_run(client: FlaskClient, admin: Actor, place_order: Callable[..., dict], watch) -> str:
    """Wait until the relay has run a dispatch tick that saw everything committed so far.

    The positive control of a "nothing was offered" assertion: an order placed now and left
    unconfirmed gets its ``unconfirmed`` alert (threshold 1 s) from a tick that started after
    it was placed, hence after every earlier commit, and that ran auto-assignment first.
    ``watch`` subscribes to ``orders/+/status``. Returns the probe order's id."""
    patch_settings(client, admin, delay_unconfirmed_seconds=1)
    probe = place_order()["id"]
    watch.wait_for(is_event(f"orders/{probe}/status", "order.delayed"), timeout=10)
    return probe


def ids(orders: list[dict]) -> list[str]:
    return [o["id"] for o in orders]


def after(at: datetime, **delta: float) -> datetime:
    return at + timedelta(**delta)
