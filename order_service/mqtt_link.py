"""One MQTT connection for the relay, with delivery confirmed by PUBACK.

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
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker could not be reached, or refused the connection."""


class ConnectionLost(Exception):
    """The connection dropped, or the broker stopped acknowledging."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    transport: str  # "tcp" or "websockets"
    path: str
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        websockets = parts.scheme == "ws"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (9001 if websockets else 1883),
            transport="websockets" if websockets else "tcp",
            path=parts.path or "/mqtt",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        scheme = "ws" if self.transport == "websockets" else "mqtt"
        suffix = self.path if self.transport == "websockets" else ""
        return f"{scheme}://{self.host}:{self.port}{suffix}"


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
        self._connack: mqtt.ReasonCode | None = None
        self.lost = False
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            transport=address.transport,
            reconnect_on_failure=False,
        )
        if address.transport == "websockets":
            client.ws_set_options(path=address.path)
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        client.max_inflight_messages_set(100)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        self.client = client

    # --- paho's network thread: record and notify, never block -----------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self._connack = reason_code
            self._cond.notify_all()
        if not reason_code.is_failure:
            if self._on_connected:  # before SUBSCRIBE: ahead of every message of this session
                self._on_connected()
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.lost = True
            self._cond.notify_all()
        if self._on_lost:
            self._on_lost()

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    def _handle_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
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

    def publish_batch(self, messages: list[tuple[str, bytes, bool]], timeout: float = 10.0) -> int:
        """Publish QoS 1 in order; return how many, from the first, the broker acknowledged."""
        mids: list[int] = []
        for topic, payload, retain in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.warning("publish to %s not sent: %s", topic, mqtt.error_string(info.rc))
                break
            mids.append(info.mid)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(
                lambda: self.lost or all(m in self._acked for m in mids),
                max(0.0, deadline - time.monotonic()),
            )
            done = 0
            for mid in mids:
                if mid not in self._acked:
                    break
                done += 1
            self._acked.difference_update(mids)
        return done

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
