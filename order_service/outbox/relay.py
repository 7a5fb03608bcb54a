"""The outbox publisher: every outbox row to the broker, in commit order.

Publishes outbox rows QoS 1 and marks a row published only after the broker's PUBACK (or
its answer on the embedded broker's publish channel, ``channel.py``). While the broker is
away rows wait in the database; nothing is lost. On every (re)connect it first sends what is
pending, then republishes what the broker lacks of the current state.

What the broker lacks, it learns from a marker it keeps retained on
``orderbus/relay/epoch``, read back after connecting (``rehydration.py``): a relay's
reconnects republish nothing; a broker that restarted empty gets every order's and
worklist's state again, one that restored an older snapshot what changed since.

Only the relay holding the relay lock (``leader.py``) publishes. Work that must run in
exactly one process (dispatch timers, the broker's login files) runs beside it as
*companions* on their own threads while it is active (``order_service.relay`` puts the
process together); messages the service reads (agent presence) come in on the relay's
connection and go to the unit that subscribed to them.

Retained state never goes backwards: one publisher, in id (commit) order, and a row is
published *retained* only when it is the newest of its topic; an older one (a re-send, an
intermediate state in a burst) goes out unretained: the broker keeps the newer state.

It reads the outbox after the last acknowledged row and, at most ``MARK_EVERY`` s later,
marks all acknowledged rows with one statement and moves its marker. A relay killed before
marking makes the next send those rows again, in order: a few republished, never a gap.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import paho.mqtt.client as mqtt
import peewee

import contract
from contract.link import BrokerUnavailable, ConnectionLost, LocalPublish, MqttLink
from order_service import faults
from order_service.accounts import broker_logins
from order_service.config import Settings
from order_service.outbox import channel, leader, rehydration
from order_service.outbox.recheck import RecheckWindow
from order_service.outbox.wakeup import Notifier, Waiter
from order_service.store.db import Prepared, db, is_sqlite
from order_service.store.models import Order, utcnow

logger = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]

# Rows the broker acknowledged are marked published within this many seconds.
MARK_EVERY = 0.25


class Companion(Protocol):
    """A unit that runs beside the publisher, in the active relay only."""

    name: str

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        """Work until ``done`` is set or ``still_active()`` says the relay lock is gone."""

    def wake(self) -> None:
        """Cut short the unit's current wait (``done`` was just set)."""


class LockLost(Exception):
    """This relay no longer holds the relay lock: it must stop publishing at once."""


class Relay:
    """``inbound``: topic filter -> handler (paho's thread) for what the service reads from
    the broker; ``before_connect`` runs before every connection attempt; ``companions`` run
    while this relay is active."""

    def __init__(
        self,
        settings: Settings,
        *,
        inbound: Mapping[str, Handler] | None = None,
        before_connect: Callable[[], None] | None = None,
        companions: Sequence[Companion] = (),
        local_publish: LocalPublish | None = None,
    ) -> None:
        self.settings = settings
        self.local_publish = local_publish  # the broker runs in this process: publish to it directly
        self.channel = None if local_publish else channel.opener(settings)  # or over its publish channel
        # ORDERBUS_MQTT_URL's broker first, then the failover ones (a cluster's other nodes), in turn.
        addresses = [settings.mqtt_address, *settings.mqtt_failover_addresses]
        if any(a.username is None for a in addresses):  # the usual case: the service account's issued secret
            username, secret = broker_logins.service_login(settings)
            addresses = [
                dataclasses.replace(a, username=username, password=secret) if a.username is None else a
                for a in addresses
            ]
        self.addresses = addresses
        self.address = addresses[0]
        self.lock = leader.lock_for(settings.database_url)
        self.role = "starting"
        self.active = threading.Event()
        self.waiter: Waiter | None = None
        self._poke = Notifier(settings.wakeup_socket)
        self.inbound = dict(inbound or {})
        self.before_connect = before_connect
        self.companions = tuple(companions)
        self._statements: dict[str, Prepared] = {}
        self.connected = threading.Event()
        self.epoch = ""  # this database's (read when the relay becomes active)
        self._through = 0  # the last outbox row the broker acknowledged (a prefix: id order is commit order)
        self._recorded = 0  # the last outbox row marked published in the database
        self._record_due: float | None = None  # when the acknowledged rows must be marked
        self.marked: int | None = None  # ``through`` of the marker the broker holds
        self.republished = 0  # messages republished after the last connect
        self.catch_ups = 0  # connections caught up (pending rows sent, lost state republished)
        self.recent = RecheckWindow(settings.relay_recheck_window)  # see recheck.py
        self.rechecks = 0  # times the state changed within the window was republished
        self._rechecking = False

    # --- lifetime ---------------------------------------------------------------

    def wake(self) -> None:
        """Cut short the current wait (after setting the stop event, say)."""
        self._poke.notify()

    def run(self, stop: threading.Event) -> None:
        """Stand by until this relay holds the relay lock, then publish until it stops or loses it."""
        try:
            while not stop.is_set():
                try:
                    acquired = self.lock.acquire()
                except leader.DatabaseUnreachable as exc:
                    if self.role != "no database":
                        logger.error(
                            "relay waiting: the database is unreachable (%s); no relay can publish"
                            " until it answers; retrying every %.1f s",
                            exc,
                            self.settings.relay_standby_poll_seconds,
                        )
                    self.role = "no database"
                    stop.wait(self.settings.relay_standby_poll_seconds)
                    continue
                if self.role == "no database":
                    logger.info("relay: the database answers again")
                if not acquired:
                    if self.role != "standby":
                        logger.info(
                            "relay standby: another relay is active (it holds the relay lock);"
                            " taking over when it stops"
                        )
                    self.role = "standby"
                    stop.wait(self.settings.relay_standby_poll_seconds)
                    continue
                self.role = "active"
                logger.info(
                    "relay active: this relay (pid %d) holds the relay lock and publishes", os.getpid()
                )
                self.active.set()
                try:
                    self._run_active(stop)
                finally:
                    self.active.clear()
                    self.lock.release()
                if not stop.is_set():
                    self.role = "lost"
                    logger.warning("relay lost the relay lock: stopped publishing, standing by")
                    stop.wait(self.settings.relay_standby_poll_seconds)  # give a standby its turn
        finally:
            self.lock.release()

    def _run_active(self, stop: threading.Event) -> None:
        backoff = 0.2
        self.waiter = Waiter(self.settings.wakeup_socket)  # only the active relay is woken
        db.connect(reuse_if_open=True)
        self._lazy_commits(True)
        self.epoch = rehydration.database_epoch()
        done = threading.Event()
        threads = [
            threading.Thread(target=unit.run, args=(done, self.lock.held), name=f"relay-{unit.name}")
            for unit in self.companions
        ]
        for thread in threads:
            thread.start()
        try:
            while not stop.is_set():
                link = MqttLink(
                    self.address,
                    self.address.username or "",  # the client id is the username on both brokers
                    self.settings.mqtt_keepalive,
                    subscriptions=tuple(self.inbound),
                    on_message=self._on_message,
                    on_lost=self._poke.notify,
                    local_publish=self.local_publish,
                )
                opened = None
                try:
                    self._check_lock()
                    if self.before_connect is not None:
                        self.before_connect()
                    link.connect()
                    opened = self.channel.open(link) if self.channel else None
                    backoff = 0.2
                    self.connected.set()
                    logger.info("relay connected to %s", self.address)
                    self._serve(link, stop)
                except LockLost:
                    return
                except (BrokerUnavailable, ConnectionLost) as exc:
                    lost = self.address
                    # The next broker of the list (a cluster's next node); the same one without a list.
                    self.address = self.addresses[(self.addresses.index(lost) + 1) % len(self.addresses)]
                    logger.warning(
                        "broker unavailable (%s); outbox rows wait, retrying in %.1f s%s",
                        exc,
                        backoff,
                        f" on {self.address}" if self.address != lost else "",
                    )
                except peewee.DatabaseError as exc:
                    logger.error("database error: %s; retrying in %.1f s", exc, backoff)
                finally:
                    self.connected.clear()
                    link.close()
                    if opened is not None:
                        opened.close()
                if not self.lock.held():
                    return
                stop.wait(backoff)  # the companions go on while the broker is away
                backoff = min(backoff * 2, 5.0)
        finally:
            done.set()
            for unit in self.companions:
                unit.wake()
            for thread in threads:
                thread.join()
            self.waiter.close()
            self.waiter = None
            self._lazy_commits(False)
            db.close()

    def _lazy_commits(self, on: bool) -> None:
        """SQLite: this thread's commits (marking rows published, clearing finished orders'
        retained state) skip the fsync (``synchronous=NORMAL`` on its connection only).

        They were one fsync per published batch, half of all fsyncs, under the writer lock.
        Losing them costs a re-send: WAL keeps them atomic and in order, only a power cut
        loses any, and an unmarked row is published again, in order, which the clients'
        version check absorbs. Orders, events and the companions' writes keep their fsync."""
        if not is_sqlite():
            return
        mode = "NORMAL" if on else self.settings.sqlite_synchronous
        try:
            db.execute_sql(f"PRAGMA synchronous={mode}")
        except peewee.DatabaseError as exc:
            logger.warning("cannot set synchronous=%s on the relay's connection: %s", mode, exc)

    def _check_lock(self) -> None:
        """Before anything goes to the broker: still the active relay? (PostgreSQL: one round trip)."""
        if not self.lock.held():
            raise LockLost("the relay lock is gone")

    def _serve(self, link: MqttLink, stop: threading.Event) -> None:
        """Publish on every wake-up, first thing, and otherwise every ``relay_poll_seconds``
        (the fallback for a lost wake-up); the companions run on threads of their own,
        so that a dispatch tick never holds up a publish."""
        try:
            self._catch_up(link)
            poll = self.settings.relay_poll_seconds
            woken = False  # a row committed meanwhile has queued its datagram: the first wait ends at once
            next_scan = time.monotonic() + poll
            next_sweep = 0.0
            while not stop.is_set():
                if link.lost:
                    raise ConnectionLost("disconnected")
                if woken or time.monotonic() >= next_scan:
                    self._drain(link)
                    next_scan = time.monotonic() + poll
                if self._record_due is not None and time.monotonic() >= self._record_due:
                    self._mark(link)
                    self._record_published()
                    self._record_due = None
                if time.monotonic() >= next_sweep:
                    self._check_lock()  # publishing checks it too; this notices a loss while idle
                    self._clear_finished(link)
                    next_sweep = time.monotonic() + 1.0
                if self.waiter is not None:
                    until = min(next_scan, next_sweep, self._record_due or next_scan)
                    woken = self.waiter.wait(max(0.0, until - time.monotonic()))
        finally:
            self._record_quietly()

    # --- publishing ---------------------------------------------------------------

    def _send(
        self,
        link: MqttLink,
        messages: list[tuple[str, bytes, bool]],
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        """Publish; hand the acknowledged prefix to ``on_acked``; a shortfall ends the connection.

        The relay lock is checked before the first message and again every ``relay_batch``
        messages of a long batch."""
        acked = link.publish_batch(messages, check=self._check_lock, check_every=self.settings.relay_batch)
        if acked and on_acked:
            faults.kill_point("relay.after_publish")  # acknowledged, not yet marked published
            on_acked(acked)
        if acked < len(messages):
            raise ConnectionLost(f"{len(messages) - acked} of {len(messages)} publishes not acknowledged")
        if self.recent and link.slowest_ack >= self.settings.relay_stall_seconds and not self._rechecking:
            self._recheck(link, f"an acknowledgement took {link.slowest_ack:.1f} s")

    def _drain(self, link: MqttLink) -> int:
        """Publish every outbox row after the acknowledged ones, in id order; return how many
        went out. They are marked published later (:meth:`_record_published`)."""
        total = 0
        while True:
            rows = self._statement("pending").execute(self._through, self.settings.relay_batch)
            if not rows:
                return total
            messages = [(topic, payload.encode(), bool(newest)) for _, topic, payload, newest in rows]

            def acknowledged(acked: int, rows: list[tuple] = rows) -> None:
                self.recent.acknowledged(self._through)
                self._through = rows[acked - 1][0]
                if self._record_due is None:
                    self._record_due = time.monotonic() + MARK_EVERY

            self._send(link, messages, acknowledged)
            total += len(rows)
            if len(rows) < self.settings.relay_batch:
                # All there was. A row committed since then has sent its wake-up datagram,
                # which ends the relay's next wait at once: no need to ask again now.
                return total

    def _record_published(self) -> None:
        """Mark every acknowledged row published: one statement (the marker stays due)."""
        if self._through <= self._recorded:
            return
        with db.atomic():
            self._statement("mark").execute(utcnow(), self._recorded, self._through)
        self._recorded = self._through

    def _record_quietly(self) -> None:
        """On the way out (broker lost, relay stopping): mark what the broker acknowledged,
        if the database lets us; rows left unmarked are only published again."""
        try:
            self._record_published()
        except peewee.DatabaseError as exc:
            logger.warning("could not mark the acknowledged rows published (%s): they go out again", exc)

    def _statement(self, name: str) -> Prepared:
        """The outbox statements of the hot path, their SQL built once (``rehydration.statement``)."""
        if name not in self._statements:
            self._statements[name] = rehydration.statement(name, self.settings.relay_batch)
        return self._statements[name]

    def _catch_up(self, link: MqttLink) -> None:
        """After connecting: what is pending, then what the broker lacks (``rehydration.py``)."""
        held = contract.parse_relay_epoch(
            link.read_retained(contract.RELAY_EPOCH, contract.relay_probe(secrets.token_hex(8)))
        )
        before = self._through = self._recorded = rehydration.published_through()
        written = rehydration.written_through()
        self.marked = None  # no marker until the broker is whole again
        self._drain(link)
        self._record_published()  # what follows reads the published rows
        since, why = rehydration.lacking(held, self.epoch, before, written)
        if why is None and held is not None:
            self.marked = held[1]
            self.republished = 0
            logger.info(
                "the broker kept its retained state (marker at row %d): nothing to republish", held[1]
            )
        else:
            started = time.monotonic()
            if since is not None:
                self.marked = since
            messages = rehydration.lost_state(self.settings.retain_terminal_seconds, since, before)
            # One stream: publish_batch keeps its window of unacknowledged messages full.
            self._send(link, messages)
            self.republished = len(messages)
            logger.info(
                "republished the state of %d orders and worklists in %.0f ms (%s)",
                len(messages),
                (time.monotonic() - started) * 1000,
                why,
            )
        whole = why is not None and since is None  # everything was just republished
        if self.catch_ups and self.recent and not whole:
            self._recheck(link, "reconnected")
        self._mark(link)
        self.catch_ups += 1

    def _recheck(self, link: MqttLink, why: str) -> None:
        """Republish the state changed in the recheck window (``recheck.py``), again while the
        republish itself stalls (at most five rounds)."""
        self._rechecking = True
        try:
            for _ in range(5):
                since = self.recent.since()
                if since is None:
                    return
                self._record_published()  # lost_state reads the published rows
                messages = rehydration.lost_state(self.settings.retain_terminal_seconds, since, self._through)
                self._send(link, messages)
                self.rechecks += 1
                logger.warning(
                    "%s: republished the state of %d orders and worklists changed since row %d"
                    " (the broker may have acknowledged what it did not store)",
                    why,
                    len(messages),
                    since,
                )
                if link.slowest_ack < self.settings.relay_stall_seconds:
                    return
                why = f"the republish stalled too ({link.slowest_ack:.1f} s)"
        finally:
            self._rechecking = False

    def _mark(self, link: MqttLink) -> None:
        """Publish the marker, retained, unless the broker holds it already."""
        if self.marked != self._through:
            self._send(link, [(contract.RELAY_EPOCH, contract.relay_epoch(self.epoch, self._through), True)])
            self.marked = self._through

    def _clear_finished(self, link: MqttLink) -> None:
        """Clear the retained state of orders finished longer ago than the retention window."""
        self._record_published()  # an order whose last rows are unmarked waits for them
        finished, clears = rehydration.finished_clears(
            self.settings.retain_terminal_seconds, self.settings.relay_batch
        )
        if not finished:
            return
        self._send(link, clears)
        with db.atomic():
            Order.update(retained_cleared_at=utcnow()).where(Order.id.in_(finished)).execute()
        logger.info("cleared the retained state of %d finished orders", len(finished))

    # --- what the service reads from the broker ----------------------------------------

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        """paho's thread: hand the message to the unit that subscribed to its topic."""
        for topic_filter, handler in self.inbound.items():
            if mqtt.topic_matches_sub(topic_filter, message.topic):
                handler(message)
