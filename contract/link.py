"""How orderbus's processes connect to the broker: the broker URL and two connections.

- :class:`BrokerAddress`, :func:`url_host`, :func:`masked_url`: the broker URL
  (``contract/address.py``, offered here too).
- :class:`MqttLink`: one connection with delivery confirmed by PUBACK (the relay's).
- :class:`MqttFeed`: a read-only subscription that reconnects by itself, for processes
  that use MQTT only as a wake-up (the webhook worker, the Socket.IO bridge).

A fresh paho client is made for every connection. paho would otherwise resend
its in-memory queue after a reconnect, *after* the relay has republished the
current state, and an old version would overwrite a newer retained message.
Here nothing outlives a connection: what was not acknowledged is still
unpublished in the outbox and is sent again, in order, by the relay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import contract
from contract.address import MASK, SCHEMES, SECRET_PARAMS, BrokerAddress, masked_url, url_host

__all__ = [
    "MASK",
    "SCHEMES",
    "SECRET_PARAMS",
    "WINDOW",
    "BrokerAddress",
    "BrokerUnavailable",
    "ConnectionLost",
    "LocalPublish",
    "MqttFeed",
    "MqttLink",
    "masked_url",
    "url_host",
]

logger = logging.getLogger(__name__)

# Unacknowledged QoS 1 publishes in flight at once.
# Well under 65,535 message ids; large enough that the broker, not the round trip,
# sets the pace of a rehydration.
WINDOW = 1000

# With the broker in this process (MqttLink's ``local_publish``): messages handed to it at a
# time, so that a long batch (a rehydration) lets the broker's loop serve its clients between.
LOCAL_CHUNK = 100

# (messages, timeout) -> how many the broker of this process took (all, or it raises).
LocalPublish = Callable[[list[tuple[str, bytes, bool]], float], int]

# How long the relay's read of its retained marker waits for each answer (SUBACK, PUBACK,
# the probe's echo) before it gives up on the connection and tries the next broker; see
# MqttLink.read_retained. 30 s was tried: a NATS node that never answered then held the
# relay for 30 s (two cluster tests in CI), where moving on after 5 s finds one that does.
READ_TIMEOUT_SECONDS = 5.0


def stop_loop(client: mqtt.Client) -> None:
    """``client.loop_stop()``, without paho 2.2's race: its network thread, ending by itself
    after a disconnect, sets ``client._thread`` to None between loop_stop's check and its
    join, and loop_stop raises AttributeError (eclipse-paho/paho.mqtt.python#872; a test
    client failed on it). The loop has ended then, which is all loop_stop waits for."""
    try:
        client.loop_stop()
    except AttributeError:
        if client._thread is not None:
            raise


class BrokerUnavailable(Exception):
    """The broker could not be reached, or refused the connection."""


class ConnectionLost(Exception):
    """The connection dropped, or the broker stopped acknowledging."""


MessageHandler = Callable[[mqtt.MQTTMessage], None]


@dataclass
class _Reading:
    """What :meth:`MqttLink.read_retained` has seen so far (guarded by the link's lock)."""

    topic: str
    probe: bytes
    subacks: dict[int, bool] = field(default_factory=dict)  # SUBACKs by message id
    probe_mid: int | None = None
    echoed: bool = False
    retained: bytes | None = None


class MqttLink:
    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        keepalive: int = 30,
        *,
        subscriptions: tuple[str, ...] = (),
        on_message: MessageHandler | None = None,
        on_lost: Callable[[], None] | None = None,
        on_connected: Callable[[], None] | None = None,
        local_publish: LocalPublish | None = None,
    ) -> None:
        self.address = address
        self.keepalive = keepalive
        self.local_publish = local_publish
        self.subscriptions = subscriptions
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_connected = on_connected
        self._cond = threading.Condition()
        self._acked: set[int] = set()
        self._awaited: int | None = None  # the message id publish_batch is blocked on
        self._connack: mqtt.ReasonCode | None = None
        self._reading: _Reading | None = None
        self.lost = False
        # The longest the last publish_batch waited with no acknowledgement coming (seconds): a
        # broker that stalls may have failed to store what it then acknowledged (Relay.recheck).
        self.slowest_ack = 0.0
        client = address.client(client_id, reconnect_on_failure=False)
        # No limit in paho: publish_batch keeps its own window. paho's limit would cost a
        # scan of every message in flight on each PUBACK (its _update_inflight).
        client.max_inflight_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        self.client = client

    # --- paho's network thread: record and notify, never block -----------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connack = reason_code
            self._cond.notify_all()
        if not reason_code.is_failure:
            if self._on_connected:  # before SUBSCRIBE: ahead of every message of this session
                self._on_connected()
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.lost = True
            self._cond.notify_all()
        if self._on_lost:
            self._on_lost()

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        with self._cond:
            self._acked.add(mid)
            # Wake the relay only for the acknowledgement it waits for.
            if mid == self._awaited or (self._reading is not None and mid == self._reading.probe_mid):
                self._cond.notify_all()

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        reading = self._reading
        if reading is not None and message.topic == reading.topic:
            with self._cond:
                if message.payload == reading.probe:
                    reading.echoed = True
                elif message.retain and not reading.echoed:
                    reading.retained = bytes(message.payload)
                self._cond.notify_all()
            return
        if self._on_message:
            self._on_message(message)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties,
    ) -> None:
        with self._cond:
            reading = self._reading
            if reading is not None:  # recorded by id: the SUBACK may beat subscribe()'s return
                reading.subacks[mid] = bool(reason_codes) and not reason_codes[0].is_failure
                self._cond.notify_all()

    # --- the relay's thread -----------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the address's current node; on failure the next connection tries the next node."""
        host, port = self.address.endpoint()
        where = str(self.address)
        try:
            self.client.connect(host, port, self.keepalive)
        except OSError as exc:
            self.address.next_endpoint()
            raise BrokerUnavailable(f"{where}: {exc}") from exc
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self.lost, timeout)
            connack = self._connack
        if connack is None or connack.is_failure:
            self.address.next_endpoint()
        if connack is None:
            if self.lost:
                raise BrokerUnavailable(f"{where}: the connection closed before its CONNACK")
            raise BrokerUnavailable(f"{where}: no CONNACK within {timeout:.0f} s")
        if connack.is_failure:
            raise BrokerUnavailable(f"{where} refused the connection: {connack}")

    def read_retained(self, topic: str, probe: bytes, timeout: float = READ_TIMEOUT_SECONDS) -> bytes | None:
        """The message the broker retains on ``topic``, or None when it holds none.

        Subscribes to ``topic``, then publishes ``probe`` (unique to this call) there, QoS 1
        and not retained. A broker sends a subscription's retained message before anything
        published after it was acknowledged, so once the probe has come back whatever was
        retained has come first. Unsubscribes after. Also None when the subscription is
        refused or the acknowledged probe never comes back (the ACL hides the topic): the
        caller must then assume nothing is retained. Raises ConnectionLost when the
        connection drops or the broker does not answer within ``timeout`` seconds.
        """
        with self._cond:
            reading = self._reading = _Reading(topic, probe)
        try:
            _rc, mid = self.client.subscribe(topic, qos=1)
            with self._cond:
                self._cond.wait_for(lambda: mid in reading.subacks or self.lost, timeout)
                if self.lost or mid not in reading.subacks:
                    raise ConnectionLost(f"no SUBACK for {topic} within {timeout:.0f} s")
                if not reading.subacks[mid]:
                    logger.warning("the broker refused the subscription to %s", topic)
                    return None
            info = self.client.publish(topic, probe, qos=1, retain=False)
            with self._cond:
                reading.probe_mid = info.mid

                def answered() -> bool:
                    return reading.echoed and info.mid in self._acked

                if not self._cond.wait_for(lambda: answered() or self.lost, timeout) or self.lost:
                    if self.lost or info.mid not in self._acked:
                        raise ConnectionLost(f"the probe on {topic} was not acknowledged")
                    logger.warning("the probe on %s did not come back: may this login read it?", topic)
                    return None
                return reading.retained
        finally:
            with self._cond:
                self._reading = None
                if reading.probe_mid is not None:
                    self._acked.discard(reading.probe_mid)
            if not self.lost:
                self.client.unsubscribe(topic)

    def publish_batch(
        self,
        messages: Iterable[tuple[str, bytes, bool]],
        timeout: float = 10.0,
        *,
        check: Callable[[], None] | None = None,
        check_every: int = 500,
    ) -> int:
        """Publish QoS 1 in order; return how many, from the first, the broker acknowledged.

        Streams: up to :data:`WINDOW` messages are unacknowledged at a time, and the
        next one goes out as soon as the oldest is acknowledged, so a long batch (a
        rehydration) never stops to wait for a whole chunk. ``check`` runs before
        the first message and then every ``check_every`` (the relay lock); it stops
        the batch by raising. ``timeout`` bounds the wait for the oldest acknowledgement.

        With ``local_publish`` (the broker runs in this process, or its publish channel is
        open) the messages go to it directly, :data:`LOCAL_CHUNK` at a time, not over the
        connection.
        """
        self.slowest_ack = 0.0
        if self.local_publish is not None:
            return self._publish_locally(list(messages), timeout, check, check_every)
        outstanding: deque[int] = deque()
        done = 0
        try:
            for sent, (topic, payload, retain) in enumerate(messages):
                if check is not None and sent % check_every == 0:
                    check()
                if len(outstanding) >= WINDOW:
                    done += self._await_acks(outstanding, WINDOW - 1, timeout)
                    if len(outstanding) >= WINDOW:
                        return done  # the oldest was never acknowledged
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    logger.warning("publish to %s not sent: %s", topic, mqtt.error_string(info.rc))
                    break
                outstanding.append(info.mid)
            done += self._await_acks(outstanding, 0, timeout)
            return done
        finally:
            with self._cond:
                self._acked.difference_update(outstanding)

    def _publish_locally(
        self,
        messages: list[tuple[str, bytes, bool]],
        timeout: float,
        check: Callable[[], None] | None,
        check_every: int,
    ) -> int:
        assert self.local_publish is not None
        done = 0
        step = max(1, min(LOCAL_CHUNK, check_every))
        while done < len(messages):
            if check is not None and done % check_every < step:
                check()
            try:
                done += self.local_publish(messages[done : done + step], timeout)
            except Exception as exc:  # the broker of this process stopped: as a lost connection
                raise ConnectionLost(f"the broker of this process did not take the messages: {exc}") from exc
        return done

    def _await_acks(self, outstanding: deque[int], keep: int, timeout: float) -> int:
        """Wait until at most ``keep`` of ``outstanding`` (oldest first) are unacknowledged; pop
        the acknowledged prefix and return its length. Gives up when the connection drops or
        the oldest is not acknowledged within ``timeout`` seconds."""
        popped, progress, since = 0, 0, time.monotonic()
        with self._cond:
            while True:
                while outstanding and outstanding[0] in self._acked:
                    self._acked.discard(outstanding.popleft())
                    popped += 1
                if popped > progress or len(outstanding) <= keep or self.lost:
                    now = time.monotonic()  # how long this wait went without an acknowledgement
                    self.slowest_ack = max(self.slowest_ack, now - since)
                    progress, since = popped, now
                if len(outstanding) <= keep or self.lost:
                    self._awaited = None
                    return popped
                # A broker acknowledges QoS 1 publishes in the order it received them
                # [MQTT-4.6.0-2], so the one that ends this wait is the last it needs (the
                # whole batch, when keep is 0): one wake-up, not one per message. Should
                # an earlier one still be missing then, the wait goes on for the oldest.
                last = outstanding[len(outstanding) - keep - 1]
                self._awaited = last if last not in self._acked else outstanding[0]
                if not self._cond.wait(timeout) and outstanding[0] not in self._acked:
                    self._awaited = None
                    self.slowest_ack = max(self.slowest_ack, time.monotonic() - since)
                    return popped  # the oldest not acknowledged within ``timeout`` seconds

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            stop_loop(self.client)


class MqttFeed:
    """Runs in its own thread: connect, subscribe, hand each message to ``on_message``, reconnect."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        on_message: Callable[[mqtt.MQTTMessage], None],
        keepalive: int = 30,
        filters: tuple[str, ...] = (contract.ORDERS_ALL, contract.AGENTS_ALL),
    ) -> None:
        self.address, self.client_id, self.keepalive = address, client_id, keepalive
        self.on_message = on_message
        self.filters = filters
        self.connected = threading.Event()
        # Sessions accepted so far; it moves before the session's first message is handed on, so
        # ``on_message`` can tell the first session's retained replay from a later one's.
        self.sessions = 0
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-feed", daemon=True)

    def start(self) -> MqttFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._lost.set()
        self._thread.join(10)

    def _count_session(self) -> None:
        self.sessions += 1

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            self._lost.clear()
            link = MqttLink(
                self.address,
                self.client_id,
                self.keepalive,
                subscriptions=self.filters,
                on_message=self.on_message,
                on_lost=self._lost.set,
                on_connected=self._count_session,
            )
            try:
                link.connect()
                backoff = 0.2
                self.connected.set()
                logger.info("subscribed to %s on %s", ", ".join(self.filters), self.address)
                self._lost.wait()
            except BrokerUnavailable as exc:
                logger.warning("broker unavailable (%s); retrying in %.1f s", exc, backoff)
            finally:
                self.connected.clear()
                link.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
