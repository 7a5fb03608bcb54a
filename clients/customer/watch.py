"""``python -m clients.customer watch ORDER``: follow one order live over MQTT.

The customer's broker login (``mqtt`` of ``POST /auth/token``) reads only the customer's
own feed, ``customers/<user id>/orders``: every message is the customer's whole view, with
a version that only goes up. The watcher keeps the highest version, prints each status
the order reaches (with its time, the ETA once known, the courier's first name while out
for delivery) and stops once the order is delivered, cancelled, rejected or failed.
``contract.link.MqttFeed`` reconnects by itself; the broker's retained feed then brings
the order's current state, and a status reached in the gap is printed from its time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime

import contract
from contract.address import BrokerAddress
from contract.link import MqttFeed

FINISHED = ("delivered", "cancelled", "rejected", "failed")
STEPS = ("placed", "confirmed", "preparing", "ready", "picked_up", *FINISHED)


def clock(stamp: str | None) -> str:
    """An RFC 3339 time as the local HH:MM:SS ("?" when absent or unreadable)."""
    if not stamp:
        return "?"
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "?"


def describe(order: dict, status: str) -> str:
    """One line for one status the order reached."""
    line = f"{clock(order['status_times'].get(status))}  {status}"
    if status == order["status"]:
        if order.get("eta") and status not in FINISHED:
            line += f"  ETA {clock(order['eta'])}"
        if order.get("courier"):
            line += f"  with {order['courier']['first_name']}"
        if order.get("failure"):
            line += f"  ({order['failure']['reason']})"
        if order.get("reason"):
            line += f"  reason: {order['reason']}"
    return line


class Watcher:
    """Turns the customer's feed into lines about one order; ``done`` once it is finished."""

    def __init__(self, order_id: str, say: Callable[[str], None], as_json: bool = False) -> None:
        self.order_id, self.say, self.as_json = order_id, say, as_json
        self.version = 0
        self.printed: set[str] = set()
        self.eta: str | None = None
        self.done = threading.Event()

    def offer(self, feed: dict) -> None:
        """Apply one feed message (older or equal versions are dropped)."""
        version = feed.get("version")
        if not isinstance(version, int) or version <= self.version:
            return
        self.version = version
        order = next((o for o in feed.get("orders", []) if o.get("id") == self.order_id), None)
        if order is None:
            return
        reached = sorted(
            (s for s in order["status_times"] if s in STEPS and s not in self.printed),
            key=lambda s: (order["status_times"][s], STEPS.index(s)),
        )
        changed = bool(reached) or order.get("eta") != self.eta
        if self.as_json and changed:
            self.say(json.dumps(order, sort_keys=True))
        elif reached:
            for status in reached:
                self.say(describe(order, status))
        elif changed and order.get("eta"):
            self.say(f"{clock(feed.get('updated_at'))}  ETA now {clock(order['eta'])}")
        self.printed.update(reached)
        self.eta = order.get("eta")
        if order["status"] in FINISHED:
            self.done.set()


def follow(address: BrokerAddress, customer_id: str, watcher: Watcher, timeout: float | None) -> bool:
    """Follow the feed until the order is finished (True) or ``timeout`` seconds pass (False)."""

    def on_message(message) -> None:
        try:
            feed = contract.loads(bytes(message.payload))
        except ValueError:
            return
        if feed is not None:
            watcher.offer(feed)

    feed = MqttFeed(
        address, address.username or "", on_message, filters=(contract.customer_orders(customer_id),)
    )
    feed.start()
    try:
        return watcher.done.wait(timeout)
    finally:
        feed.stop()
