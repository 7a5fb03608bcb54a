"""A small MQTT subscriber for orderbus clients: connect, subscribe, keep the newest.

    feed = Feed("mqtt://127.0.0.1:1883", [contract.agent_assigned("agt_1")],
                username="agt_1", password=secret,
                clean_session=False, resync=fetch_snapshot)
    feed.start()
    update = feed.get(timeout=1.0)   # an Update, or None

What it does for you (docs/architecture.md, "Delivery guarantees" 5):

- keeps, per order (``orders/<id>/status``, ``orders/new``) and per worklist
  (``agents/<id>/assigned``), the highest ``version`` seen and drops anything
  older or equal (:func:`contract.classify`, :class:`contract.VersionGate`), so
  at-least-once delivery and retained replays never go back;
- an empty retained payload on ``orders/<id>/status`` (a finished order cleared
  by the relay) comes out once as an ``Update`` with ``cleared=True``;
- on every (re)connect it subscribes again and calls ``resync()`` (e.g. a REST
  snapshot) on its own thread; what that returns goes through the same filter;
- optional last will and "birth" message (``will=`` / ``birth=``), published on
  every connect (retained, QoS 1): how a device announces its presence;
- ``mqtts://`` and ``wss://`` connect over TLS and check the broker's certificate
  against the system's CAs, or against ``ca_file`` (contract.link.BrokerAddress).

paho's network thread only decodes and hands off to a queue; the consumer reads
``get()``. Nothing here knows about the agent app: the bridges may reuse it.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

import contract
from contract import classify
from contract.link import BrokerAddress, stop_loop

__all__ = ["Feed", "FeedError", "Update", "classify", "parse_url"]

logger = logging.getLogger(__name__)


class FeedError(Exception):
    """The broker refused or could not be reached."""


@dataclass(frozen=True)
class Update:
    """One new state: ``kind`` is ``order``, ``worklist``, ``presence`` or ``other``."""

    topic: str
    kind: str
    key: str | None
    version: int | None
    payload: dict[str, Any] = field(default_factory=dict)
    cleared: bool = False
    source: str = "mqtt"  # or "resync"


def parse_url(url: str, ca_file: str | None = None) -> BrokerAddress:
    """``mqtt://``, ``mqtts://`` (TLS), ``ws://`` or ``wss://``; a bare ``host:port`` is mqtt://."""
    try:
        return BrokerAddress.parse(url if "://" in url else f"mqtt://{url}", ca_file=ca_file)
    except ValueError as exc:
        raise FeedError(str(exc)) from None


class Feed:
    """A paho client that subscribes ``filters`` and yields only new states."""

    def __init__(
        self,
        url: str,
        filters: Iterable[str],
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        resync: Callable[[], Iterable[tuple[str, dict[str, Any]]]] | None = None,
        will: tuple[str, bytes] | None = None,
        birth: Callable[[], tuple[str, bytes]] | None = None,
        keepalive: int = 30,
        ca_file: str | None = None,
    ) -> None:
        self.address = parse_url(url, ca_file)
        if username is not None:
            self.address = dataclasses.replace(self.address, username=username, password=password)
        self.filters = list(filters)
        self.resync = resync
        self.birth = birth
        self.versions = contract.VersionGate()  # keyed by (kind, key)
        self.updates: queue.Queue[Update] = queue.Queue()
        self.connected = threading.Event()
        self._answered = threading.Event()  # the first CONNACK, accepted or not
        self.refused: str | None = None
        self._keepalive = keepalive
        self._cleared: set[str] = set()
        # Both brokers use the username as the client id, whatever a client sends: the
        # default says so (give client_id only to a broker without logins).
        self.client = self.address.client(client_id or username or "", clean_session=clean_session)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda *a: self._move.set()
        self.client.on_pre_connect = self._next_node
        self.client.on_message = self._on_message
        self._move = threading.Event()  # the last connection failed or was lost

    def _on_disconnect(self, *args: Any) -> None:
        self.connected.clear()
        self._move.set()

    def _next_node(self, client: mqtt.Client, userdata: Any) -> None:
        """A cluster (several URLs): after a failed or lost connection, paho's reconnect goes
        to the next node. paho 2.2 refuses ``client.host = ...`` while it reconnects, so this,
        called right before it opens the socket, sets what that setter would."""
        if self.address.others and self._move.is_set():
            self._move.clear()
            self.address.next_endpoint()
            client._host, client._port = self.address.endpoint()

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 10.0, *, keep_trying: bool = False) -> Feed:
        """Connect; a FeedError when the broker refuses the login or (unless ``keep_trying``)
        does not answer within ``timeout``. With ``keep_trying`` a broker that cannot be reached
        is not an error: paho's thread goes on connecting by itself (``connected`` tells)."""
        if keep_trying:
            self.client.connect_async(*self.address.endpoint(), keepalive=self._keepalive)
            self.client.loop_start()
            self._answered.wait(timeout)
            if self.refused:
                stop_loop(self.client)
                raise FeedError(f"MQTT {self.address}: {self.refused}")
            return self
        try:
            self.client.connect(*self.address.endpoint(), keepalive=self._keepalive)
        except OSError as exc:  # TLS: a certificate not trusted, or not this host's, too
            raise FeedError(f"MQTT {self.address}: {exc}") from None
        self.client.loop_start()
        if not self._answered.wait(timeout) or not self.connected.is_set():
            stop_loop(self.client)
            raise FeedError(f"MQTT {self.address}: {self.refused or 'no CONNACK'}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        """QoS 1 publish; paho keeps it and sends it after a reconnect if need be."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise FeedError(f"publish {topic}: {mqtt.error_string(info.rc)}")

    def get(self, timeout: float | None = None) -> Update | None:
        try:
            return self.updates.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- paho's thread: decode, filter, hand off --------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            logger.warning("broker refused the connection: %s", reason_code)
            client.disconnect()
            self._answered.set()
            return
        client.subscribe([(f, 1) for f in self.filters])
        if self.birth is not None:
            topic, payload = self.birth()
            client.publish(topic, payload, qos=1, retain=True)
        self.connected.set()
        self._answered.set()
        if self.resync is not None:
            threading.Thread(target=self._resync, name="feed-resync", daemon=True).start()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            payload = contract.loads(message.payload)
        except ValueError:
            logger.warning("dropped a message on %s that is not a JSON object", message.topic)
            return
        if payload is None:
            self._handle_clear(message.topic)
        else:
            self.offer(message.topic, payload, "mqtt")

    def _handle_clear(self, topic: str) -> None:
        order_id = contract.order_from_status_topic(topic)
        if order_id is not None and order_id not in self._cleared:
            self._cleared.add(order_id)
            self.updates.put(Update(topic, "order", order_id, None, cleared=True))

    def _resync(self) -> None:
        try:
            for topic, payload in self.resync() or ():
                self.offer(topic, payload, "resync")
        except Exception as exc:  # a REST snapshot may fail; MQTT's retained state still arrives
            logger.warning("resync failed: %s", exc)

    def offer(self, topic: str, payload: dict[str, Any], source: str = "mqtt") -> bool:
        """Queue the message if it is newer than what is held; return whether it was."""
        kind, key, version = classify(topic, payload)
        if key is not None and version is not None and not self.versions.offer((kind, key), version):
            return False
        self.updates.put(Update(topic, kind, key, version, payload, source=source))
        return True
