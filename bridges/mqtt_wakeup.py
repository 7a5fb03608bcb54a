"""A read-only MQTT subscription that only says "something happened" (the bridges' wake-up).

It logs in with the bridges' broker account (``<data_dir>/mqtt/bridge-secret``,
issued by ``python -m order_service bootstrap``) and reconnects by itself, so a
broker restart only costs wake-ups; the bridges' periodic scan covers the gap.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from order_service.accounts import broker_logins
from order_service.config import Settings
from order_service.outbox.link import BrokerAddress, BrokerUnavailable, MqttLink

logger = logging.getLogger(__name__)

FILTERS = ("orders/#", "agents/#")


def bridge_address(settings: Settings) -> BrokerAddress:
    """The broker of ORDERBUS_MQTT_URL, logged in as the bridge account (not the relay's)."""
    address = BrokerAddress.parse(settings.mqtt_url)
    username, secret = broker_logins.bridge_login(settings)
    return dataclasses.replace(address, username=username, password=secret)


class MqttFeed:
    """Runs in its own thread: connect, subscribe, hand each message to ``on_message``, reconnect."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        on_message: Callable[[mqtt.MQTTMessage], None],
        keepalive: int = 30,
    ) -> None:
        self.address, self.client_id, self.keepalive = address, client_id, keepalive
        self.on_message = on_message
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
                subscriptions=FILTERS,
                on_message=self.on_message,
                on_lost=self._lost.set,
                on_connected=self._count_session,
            )
            try:
                link.connect()
                backoff = 0.2
                self.connected.set()
                logger.info("subscribed to %s on %s", ", ".join(FILTERS), self.address)
                self._lost.wait()
            except BrokerUnavailable as exc:
                logger.warning("broker unavailable (%s); retrying in %.1f s", exc, backoff)
            finally:
                self.connected.clear()
                link.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
