"""The relay's publish channel to the embedded broker of another process (``broker/channel.py``).

With the embedded broker as the relay's only broker (``python -m broker``: ``make run``, the
test systems) the relay hands each batch to it over the broker's publish channel, not as
MQTT PUBLISHes: one frame and one answer per batch instead of a packet, a PUBACK and a
wake-up of paho's network thread per message. The MQTT connection stays for what the relay
reads (presence, locations, its retained marker) and tells when the broker is gone. Where
the channel cannot be opened (no file: Mosquitto, or a broker of another data directory; a
file a killed broker left), the relay publishes over MQTT, as with every other broker.
``ORDERBUS_RELAY_CHANNEL=false`` always does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from broker.channel import ChannelUnavailable, PublishChannel, channel_file
from contract.link import MqttLink
from order_service.config import Settings

logger = logging.getLogger(__name__)


def channel_path(settings: Settings) -> Path | None:
    """The embedded broker's channel file, when that broker is the relay's only one."""
    if not settings.relay_channel or settings.cluster_nodes > 1 or settings.mqtt_failover_urls:
        return None
    return channel_file(settings.mqtt_password_path) if settings.mqtt_is_embedded_broker else None


def opener(settings: Settings) -> ChannelOpener | None:
    path = channel_path(settings)
    return ChannelOpener(path) if path is not None else None


class ChannelOpener:
    """Opens the channel for each MQTT connection of the relay, saying once why it cannot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._said: str | None = None

    def open(self, link: MqttLink) -> PublishChannel | None:
        """Connected to the broker over MQTT: publish over its channel from now (None: over MQTT)."""
        try:
            channel = PublishChannel.open(self.path)
        except ChannelUnavailable as exc:
            if self._said != str(exc):
                logger.info("publishing over MQTT, not the broker's publish channel: %s", exc)
            self._said = str(exc)
            return None
        if self._said is not None:
            logger.info("publishing over the broker's publish channel again")
        self._said = None
        link.local_publish = channel
        return channel
