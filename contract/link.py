"""How orderbus's processes connect to the broker: the broker URL and two connections.

- :class:`BrokerAddress`: ``mqtt://user:secret@host:port`` parsed once; ``mqtts://``
  (MQTT over TLS), ``ws://`` and ``wss://`` (MQTT over WebSocket, plain or TLS) too.
  TLS checks the broker's certificate and host name against the system's CAs, or
  against the CA file given (``ORDERBUS_MQTT_CA_FILE``). :meth:`BrokerAddress.client`
  makes a paho client set up for it: every orderbus process and client connects so.
  :func:`url_host` turns a bind address into a host to connect to.
- :class:`MqttLink`: one connection with delivery confirmed by PUBACK (the relay's).
- :class:`MqttFeed`: a read-only subscription that reconnects by itself, for processes
  that use MQTT only as a wake-up (the webhook worker, the Socket.IO bridge).
- :func:`masked_url`: a URL as it may be logged or printed, its password replaced.

A fresh paho client is made for every connection. paho would otherwise resend
its in-memory queue after a reconnect, *after* the relay has republished the
current state, and an old version would overwrite a newer retained message.
Here nothing outlives a connection: what was not acknowledged is still
unpublished in the outbox and is sent again, in order, by the relay.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import contract

logger = logging.getLogger(__name__)

# Unacknowledged QoS 1 publishes in flight at once.
# Well under 65,535 message ids; large enough that the broker, not the round trip,
# sets the pace of a rehydration.
WINDOW = 1000


# What stands for a password in a URL that is logged or printed.
MASK = "***"
# Query parameters that carry a secret (libpq accepts ``?password=``).
SECRET_PARAMS = {"password", "pass", "secret", "token", "sslpassword"}


def masked_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``: the form every log line and every
    message uses for a database or broker URL (``postgresql://orderbus:***@db:5432/orderbus``)."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:  # not a URL we can take apart: show none of it
        return MASK
    netloc = parts.netloc
    if not has_password and not any(k.lower() in SECRET_PARAMS for k, _ in parse_qsl(parts.query)):
        return url
    if has_password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_PARAMS for key, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


class BrokerUnavailable(Exception):
    """The broker could not be reached, or refused the connection."""


class ConnectionLost(Exception):
    """The connection dropped, or the broker stopped acknowledging."""


# URL scheme -> (paho transport, TLS, default port). wss:// defaults to 443: it is usually
# served by the reverse proxy in front of the broker's WebSocket listener.
SCHEMES: dict[str, tuple[Literal["tcp", "websockets"], bool, int]] = {
    "mqtt": ("tcp", False, 1883),
    "tcp": ("tcp", False, 1883),
    "mqtts": ("tcp", True, 8883),
    "ssl": ("tcp", True, 8883),
    "ws": ("websockets", False, 9001),
    "wss": ("websockets", True, 443),
}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    transport: Literal["tcp", "websockets"]
    path: str
    username: str | None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # TLS: trust this CA file instead of the system's

    @classmethod
    def parse(cls, url: str, ca_file: str | os.PathLike[str] | None = None) -> BrokerAddress:
        """``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://`` URL; ValueError for anything else."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(
                f"unsupported scheme {scheme!r} in {masked_url(url)!r}"
                " (use mqtt://, mqtts://, ws:// or wss://)"
            )
        transport, tls, default_port = SCHEMES[scheme]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or default_port,
            transport=transport,
            path=parts.path or "/mqtt",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=str(ca_file) if ca_file and tls else None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS only: a context that verifies the broker's certificate chain and host name."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)  # the system's CAs without a file

    def client(self, client_id: str, *, clean_session: bool = True, **options: Any) -> mqtt.Client:
        """A paho client for this address: transport, WebSocket path, TLS and login set."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            transport=self.transport,
            **options,
        )
        if self.transport == "websockets":
            client.ws_set_options(path=self.path)
        if self.tls:
            client.tls_set_context(self.ssl_context())
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        return client

    def __str__(self) -> str:
        """The address without its login, for logs and messages."""
        scheme = {("tcp", False): "mqtt", ("tcp", True): "mqtts"}.get((self.transport, self.tls))
        if scheme is None:
            scheme = "wss" if self.tls else "ws"
        suffix = self.path if self.transport == "websockets" else ""
        return f"{scheme}://{self.host}:{self.port}{suffix}"


def url_host(host: str) -> str:
    """A bind address as a host to connect to, in a URL: a wildcard as loopback, an IPv6
    literal in brackets. How every process derives its default URLs from ``ORDERBUS_*_HOST``."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


MessageHandler = Callable[[mqtt.MQTTMessage], None]


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
    ) -> None:
        self.address = address
        self.keepalive = keepalive
        self.subscriptions = subscriptions
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_connected = on_connected
        self._cond = threading.Condition()
        self._acked: set[int] = set()
        self._awaited: int | None = None  # the message id publish_batch is blocked on
        self._connack: mqtt.ReasonCode | None = None
        self.lost = False
        client = address.client(client_id, reconnect_on_failure=False)
        # No limit in paho: publish_batch keeps its own window. paho's limit would cost a
        # scan of every message in flight on each PUBACK (its _update_inflight).
        client.max_inflight_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
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
            if mid == self._awaited:  # wake the relay only for the acknowledgement it waits for
                self._cond.notify_all()

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message:
            self._on_message(message)

    # --- the relay's thread -----------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        try:
            self.client.connect(self.address.host, self.address.port, self.keepalive)
        except OSError as exc:
            raise BrokerUnavailable(f"{self.address}: {exc}") from exc
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self.lost, timeout)
            connack = self._connack
        if connack is None:
            raise BrokerUnavailable(f"{self.address}: no CONNACK within {timeout:.0f} s")
        if connack.is_failure:
            raise BrokerUnavailable(f"{self.address} refused the connection: {connack}")

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
        """
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

    def _await_acks(self, outstanding: deque[int], keep: int, timeout: float) -> int:
        """Wait until at most ``keep`` of ``outstanding`` (oldest first) are unacknowledged; pop
        the acknowledged prefix and return its length. Gives up when the connection drops or
        the oldest is not acknowledged within ``timeout`` seconds."""
        popped = 0
        with self._cond:
            while True:
                while outstanding and outstanding[0] in self._acked:
                    self._acked.discard(outstanding.popleft())
                    popped += 1
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
                    return popped  # the oldest not acknowledged within ``timeout`` seconds

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


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
