"""The dispatch timers and agent presence intake: one unit, run in the active relay only.

About once a second (``dispatch_tick_seconds``), and at once when an agent comes online,
it runs ``auto.tick``: presence timeouts, offer expiry, auto-assignment, late-order
alerts. Presence messages (``agents/<id>/presence``) arrive on the relay's broker
connection; :meth:`DispatchTimers.on_presence` queues them from paho's thread and the
unit's own thread records them. Whatever it writes to the outbox, it wakes the
publisher for, as the API does after a commit.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import peewee

import contract
from order_service.config import Settings
from order_service.dispatch import auto, presence
from order_service.dispatch.unit import run_unit
from order_service.outbox.wakeup import Notifier
from order_service.store.models import utcnow

logger = logging.getLogger(__name__)


class DispatchTimers:
    name = "timers"
    subscriptions = (contract.AGENT_PRESENCE_FILTER,)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._poke = Notifier(settings.wakeup_socket)
        # (agent id, state, heard at, sent at per the payload, retained flag)
        self._presence: queue.SimpleQueue[tuple[str, str, datetime, datetime | None, bool]] = (
            queue.SimpleQueue()
        )
        self._wake = threading.Event()  # presence heard, or the relay stops being active
        self._next_tick = 0.0

    def wake(self) -> None:
        self._wake.set()

    def on_presence(self, message: mqtt.MQTTMessage) -> None:
        """paho's thread: decode and hand off; the unit's thread writes the database."""
        agent_id = contract.agent_from_presence_topic(message.topic)
        try:
            body = json.loads(message.payload)
            state = body["state"]
        except (ValueError, KeyError, TypeError):
            return
        if agent_id and state in contract.PRESENCE_STATES:
            self._presence.put((agent_id, state, utcnow(), _sent_at(body), bool(message.retain)))
            self._wake.set()

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        run_unit("dispatch timers", done, still_active, self._wake, self._step, lambda: self._next_tick)

    def _step(self) -> None:
        heard, came_online = self._apply_presence()
        ticked = False
        if came_online or time.monotonic() >= self._next_tick:
            ticked = self._tick()
        if heard or ticked:  # they may have written outbox rows
            self._poke.notify()

    def _apply_presence(self) -> tuple[bool, bool]:
        """Record queued presence messages; (any recorded, an agent came online)."""
        heard = came_online = False
        while True:
            try:
                agent_id, state, heard_at, sent_at, retained = self._presence.get_nowait()
            except queue.Empty:
                return heard, came_online
            heard = True
            came_online |= presence.record(
                agent_id,
                state,
                heard_at=heard_at,
                sent_at=sent_at,
                retained=retained,
                timeout_seconds=self.settings.presence_timeout_seconds,
            )

    def _tick(self) -> bool:
        """Run the dispatch timers once; True when they changed something."""
        self._next_tick = time.monotonic() + self.settings.dispatch_tick_seconds
        try:
            return bool(auto.tick(self.settings))
        except peewee.DatabaseError as exc:
            logger.error(
                "dispatch tick failed: %s; next one in %.1f s", exc, self.settings.dispatch_tick_seconds
            )
        except Exception:  # a dispatch bug must not stop the outbox from being published
            logger.exception("dispatch tick failed")
        return True  # it may have committed part of its work


def _sent_at(body: dict) -> datetime | None:
    """The presence payload's ``at`` as naive UTC, or None when missing or malformed."""
    try:
        at = datetime.fromisoformat(str(body["at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return at.astimezone(UTC).replace(tzinfo=None)
