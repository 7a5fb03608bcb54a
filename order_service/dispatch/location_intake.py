"""The location intake: one unit, run in the active relay only (beside ``timers``).

Reports (``agents/<id>/location/report``) arrive on the relay's broker connection.
:meth:`LocationIntake.on_report` runs on paho's thread: it parses the report, applies the
per-agent throttle and queues what passes (a bounded queue); the unit's own thread writes
the database and the outbox, counts drops, and about once a second sweeps for stale and
gone-offline positions (``location.sweep``). Whatever it writes to the outbox, it wakes
the publisher for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import paho.mqtt.client as mqtt
import peewee

import contract
from order_service.config import Settings
from order_service.dispatch import location
from order_service.dispatch import settings as dispatch_settings
from order_service.dispatch.unit import run_unit
from order_service.outbox.wakeup import Notifier
from order_service.store.models import utcnow

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 2000  # accepted reports waiting for the database
AGENTS_HELD = 10_000  # agents whose last report time the throttle remembers
SWEEP_SECONDS = 1.0


class LocationIntake:
    name = "location"
    subscriptions = (contract.AGENT_LOCATION_REPORT_FILTER,)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._poke = Notifier(settings.wakeup_socket)
        self._reports: queue.Queue[tuple[str, location.Report]] = queue.Queue(QUEUE_LIMIT)
        self._last: OrderedDict[str, float] = OrderedDict()  # agent id -> monotonic time accepted
        self._drops: Counter[str] = Counter()
        self._lock = threading.Lock()  # guards _last and _drops (paho's thread and the unit's)
        self._wake = threading.Event()
        self._next_sweep = 0.0

    def wake(self) -> None:
        self._wake.set()

    def drop(self, reason: str) -> None:
        with self._lock:
            self._drops[reason] += 1

    def on_report(self, message: mqtt.MQTTMessage) -> None:
        """paho's thread: check and throttle; the unit's thread writes the database."""
        agent_id = contract.agent_from_location_report_topic(message.topic)
        if agent_id is None:
            return
        report = location.parse(bytes(message.payload), time.time())
        if isinstance(report, str):
            self.drop(report)
            return
        now = time.monotonic()
        with self._lock:
            last = self._last.get(agent_id)
            if last is not None and now - last < self.settings.location_min_interval_seconds:
                self._drops["throttled"] += 1
                return
            self._last[agent_id] = now
            self._last.move_to_end(agent_id)
            if len(self._last) > AGENTS_HELD:
                self._last.popitem(last=False)
        try:
            self._reports.put_nowait((agent_id, report))
        except queue.Full:
            self.drop("overloaded")
            return
        self._wake.set()

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        run_unit("location intake", done, still_active, self._wake, self._step, lambda: self._next_sweep)

    def _step(self) -> None:
        written = self._apply_reports()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
            written += location.sweep(self.settings.location_stale_seconds, utcnow())
            self._flush_drops()
            location.prune_published()
        if written:
            self._poke.notify()

    def _apply_reports(self) -> int:
        written = 0
        config = None
        while True:
            try:
                agent_id, report = self._reports.get_nowait()
            except queue.Empty:
                return written
            config = config or dispatch_settings.current(self.settings)
            trail = self.settings.location_trail_points
            reason = location.record(agent_id, report, utcnow(), trail, config)
            if reason is None:
                written += 1
            else:
                self.drop(reason)

    def _flush_drops(self) -> None:
        with self._lock:
            counts, self._drops = dict(self._drops), Counter()
        if counts:
            try:
                location.count_drops(counts)
            except peewee.DatabaseError:
                with self._lock:
                    self._drops.update(counts)  # try again at the next sweep
                raise
