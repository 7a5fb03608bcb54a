"""One client connection as the hardened broker runs it: its protocol handler and writers.

:class:`HardenedHandler` sends a session's queued messages (:mod:`broker.outbox`) and
keeps QoS 1/2 ones in ``session.inflight_out`` until acknowledged, however long that
takes; :meth:`HardenedHandler.resend_inflight` sends them again with DUP=1 on the next
connection. It also turns amqtt's read timeout (the keep-alive) into a disconnect.
The writers bound how long closing a connection may take.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.adapters import StreamWriterAdapter, WebSocketsWriter, WriterAdapter
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OutgoingApplicationMessage, Session

from broker.outbox import Outbox, Queued

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 1.0  # seconds a graceful close may take before the connection is cut
_OUTBOX = "orderbus.broker.outbox"  # key in Session.attributes, amqtt's extension point


def outbox(session: Session) -> Outbox:
    """The session's queue, created on first use; it lives and dies with the session."""
    box = session.attributes.get(_OUTBOX)
    if box is None:
        box = session.attributes[_OUTBOX] = Outbox()
    return box


class _BoundedClose:
    """close() gives up after CLOSE_TIMEOUT and aborts: amqtt's writers drained forever
    when the peer stopped reading."""

    async def close(self) -> None:
        try:
            await asyncio.wait_for(super().close(), CLOSE_TIMEOUT)  # type: ignore[misc]
        except (TimeoutError, OSError):
            self.abort()

    def abort(self) -> None:
        raise NotImplementedError


class BoundedStreamWriter(_BoundedClose, StreamWriterAdapter):
    """amqtt's TCP writer, with a bounded close."""

    def abort(self) -> None:
        self.is_closed = True
        self._writer.transport.abort()


class BoundedWebSocketsWriter(_BoundedClose, WebSocketsWriter):
    """amqtt's WebSocket writer, with a bounded close."""

    def abort(self) -> None:
        self._protocol.transport.abort()


class HardenedHandler(BrokerProtocolHandler):
    """One connection's protocol handler: sends queued messages, tracks their acks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retries: set[asyncio.Task[None]] = set()
        self.expired = False
        # Set as soon as CONNECT is read: a takeover may need to cut it before attach().
        self.connection: WriterAdapter | None = None

    def abort(self) -> None:
        """Cut the connection without a goodbye (a takeover)."""
        if isinstance(self.connection, BoundedStreamWriter | BoundedWebSocketsWriter):
            self.connection.abort()

    async def wait_disconnect(self) -> Any:
        """The DISCONNECT (or None for a dropped connection), once every message this client
        published and we acknowledged has been routed.

        amqtt sends the PUBACK when it queues an incoming message, and left the queue
        behind when the client went away: a publisher that disconnected right after its
        last PUBACK lost what was still queued. The broker's loop keeps routing while
        this waits; HardenedBroker._handle_message_delivery marks each one done.
        """
        result = await super().wait_disconnect()
        if self.session is not None:
            await self.session.delivered_message_queue.join()
        return result

    # -- keep-alive: amqtt's reader waits session.keep_alive for each packet, then only logged
    def handle_read_timeout(self) -> None:
        if self.expired or self.session is None:
            return
        self.expired = True
        logger.info(
            "client %s sent nothing for %.1f s (1.5 x its keep-alive): closing the connection",
            self.session.client_id,
            self.session.keep_alive,
        )
        if self._disconnect_waiter is not None and not self._disconnect_waiter.done():
            self._disconnect_waiter.set_result(None)  # the broker sends the will and stops us

    # -- redelivery ------------------------------------------------------------------------
    async def _retry_deliveries(self) -> None:
        # amqtt re-ran each unfinished flow here and waited up to 10 s for it inside start().
        # Outgoing messages are resent by resend_inflight(); an incoming QoS 2 message
        # still waiting for PUBREL gets its PUBREC again and a waiter, in the background.
        if self.session is None:
            return
        for message in list(self.session.inflight_in.values()):
            task = asyncio.create_task(self._handle_qos2_message_flow(message))
            self._retries.add(task)
            task.add_done_callback(self._retry_done)

    def _retry_done(self, task: asyncio.Task[None]) -> None:
        self._retries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("QoS 2 retry ended: %r", task.exception())

    async def resend_inflight(self) -> None:
        """Send again, with their packet ids, what the client had not acknowledged."""
        assert self.session is not None
        for message in list(self.session.inflight_out.values()):
            if message.qos == QOS_2 and message.pubrec_packet is not None:
                message.pubrel_packet = PubrelPacket.build(message.packet_id)
                await self._send_packet(message.pubrel_packet)
            else:
                message.publish_packet = message.build_publish_packet(dup=True)
                await self._send_packet(message.publish_packet)

    async def send_queued(self, item: Queued) -> None:
        """Send one queued message; QoS 1/2 stays in session.inflight_out until acknowledged."""
        assert self.session is not None
        if item.qos == QOS_0:
            await self._send_packet(
                PublishPacket.build(item.topic, bytes(item.data), None, False, 0, item.retain)
            )
            return
        packet_id = self.session.next_packet_id
        message = OutgoingApplicationMessage(packet_id, item.topic, item.qos, item.data, item.retain)
        message.publish_packet = message.build_publish_packet()
        self.session.inflight_out[packet_id] = message  # before sending: the ack may be quick
        await self._send_packet(message.publish_packet)

    def _settled(self, packet_id: int, qos: int) -> OutgoingApplicationMessage | None:
        if self.session is None:
            return None
        message = self.session.inflight_out.get(packet_id)
        if message is None or message.qos != qos:
            logger.debug("client %s acknowledged unknown packet id %s", self.session.client_id, packet_id)
            return None
        return message

    def _slot_freed(self) -> None:
        if self.session is not None and (wakeup := outbox(self.session).wakeup) is not None:
            wakeup()

    async def handle_puback(self, puback: PubackPacket) -> None:
        packet_id = puback.variable_header.packet_id if puback.variable_header else None
        if packet_id is None or packet_id in self._puback_waiters:  # one of amqtt's own flows
            await super().handle_puback(puback)
            return
        if (message := self._settled(packet_id, QOS_1)) is not None:
            message.puback_packet = puback
            del self.session.inflight_out[packet_id]  # type: ignore[union-attr]
            self._slot_freed()

    async def handle_pubrec(self, pubrec: PubrecPacket) -> None:
        packet_id = pubrec.packet_id
        if packet_id in self._pubrec_waiters:
            await super().handle_pubrec(pubrec)
            return
        if (message := self._settled(packet_id, QOS_2)) is not None:
            message.pubrec_packet = pubrec
            message.pubrel_packet = PubrelPacket.build(packet_id)
            await self._send_packet(message.pubrel_packet)

    async def handle_pubcomp(self, pubcomp: PubcompPacket) -> None:
        packet_id = pubcomp.packet_id
        if packet_id in self._pubcomp_waiters:
            await super().handle_pubcomp(pubcomp)
            return
        if (message := self._settled(packet_id, QOS_2)) is not None:
            message.pubcomp_packet = pubcomp
            del self.session.inflight_out[packet_id]  # type: ignore[union-attr]
            self._slot_freed()
