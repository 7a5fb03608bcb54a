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
from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter, WebSocketsWriter, WriterAdapter
from amqtt.errors import MQTTError, NoDataError
from amqtt.events import MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session
from transitions import MachineError
from websockets.protocol import State

from broker.framing import (
    CONNECT,
    DISCONNECT,
    PUBLISH,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    FramedReader,
    ProtocolViolation,
)
from broker.outbox import Outbox, Queued
from broker.wire import Publication

logger = logging.getLogger(__name__)

_PUBACK, _PINGREQ = 4, 12
_PINGRESP = b"\xd0\x00"
_PUBACK_HEADER = b"\x40\x02"  # PUBACK, flags 0, two bytes long
# The packets the reader loop leaves to amqtt's decoder, and their handlers (PUBLISH: QoS 2).
_HANDLERS = {
    CONNECT: "handle_connect",
    5: "handle_pubrec",
    PUBREL: "handle_pubrel",
    7: "handle_pubcomp",
    SUBSCRIBE: "handle_subscribe",
    UNSUBSCRIBE: "handle_unsubscribe",
    DISCONNECT: "handle_disconnect",
}

CLOSE_TIMEOUT = 1.0  # seconds a graceful close may take before the connection is cut
# Incoming QoS 2 messages the client has not released (PUBREL) yet: kept until it does, so
# bounded per session, in count (the broker sets its in-flight window) and in bytes.
AWAITING_RELEASE_BYTES = 4 * 1024 * 1024
_OUTBOX = "orderbus.broker.outbox"  # key in Session.attributes, amqtt's extension point


def outbox(session: Session) -> Outbox:
    """The session's queue, created on first use; it lives and dies with the session."""
    box = session.attributes.get(_OUTBOX)
    if box is None:
        box = session.attributes[_OUTBOX] = Outbox()
    return box


class SessionStates:
    """A session's state, as amqtt's ``transitions`` Machine kept it, without the Machine.

    Building that Machine (three states, five transitions, callbacks) was a third of the
    broker's time in a storm of 1,000 reconnecting clients: amqtt builds a Session for
    every CONNECT, also when it resumes a stored one. Same states, same triggers: connect
    from new or disconnected (an error from connected, as the Machine raised), disconnect
    from any state, each entering its state's callback."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def connect(self) -> bool:
        if self.state == "connected":
            raise MachineError(f"Can't trigger event connect from state {self.state}!")
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = "disconnected"
        self._session._on_enter_disconnected()
        return True

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class HardenedSession(Session):
    """amqtt's Session with :class:`SessionStates` for its ``transitions``."""

    def _init_states(self) -> None:
        self.transitions = SessionStates(self)  # type: ignore[assignment]


class AckingStreamReader(asyncio.StreamReader):
    """asyncio's StreamReader for a TCP connection, which handles whole PUBACKs as they arrive.

    A fan-out to 1,000 subscribers brings back 1,000 PUBACKs, each on its own socket. The
    reader loop took each one by being woken as a task (a future set, a task step through
    StreamReader, FramedReader and the loop's dispatch) only to remove one message from
    the in-flight window. While the connection's :class:`FramedReader` waits at a packet
    boundary with nothing buffered, data that starts with whole PUBACKs goes to
    :meth:`HardenedHandler.puback_arrived` from the transport's callback, without that task
    switch; whatever follows them is buffered for the reader loop as before, in order.
    A PUBACK is 4 bytes, ``40 02`` and the packet id: exactly what the reader loop handles
    without amqtt's decoder, so what the client sees is the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._framed: FramedReader | None = None
        self._on_puback: Callable[[bytes, int], None] | None = None

    def take_pubacks(
        self, framed: FramedReader | None, on_puback: Callable[[bytes, int], None] | None
    ) -> None:
        """Hand whole PUBACKs to ``on_puback(data, end)`` while ``framed`` waits between
        packets (None, None: stop)."""
        self._framed, self._on_puback = framed, on_puback

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if not isinstance(data, bytes):  # the transports give bytes; the annotation is typeshed's
            data = bytes(data)
        framed = self._framed
        if (
            framed is not None
            and framed.at_boundary
            and not self._buffer  # type: ignore[attr-defined]  # asyncio's, not in typeshed
            and data[:2] == _PUBACK_HEADER
            and self._on_puback is not None
        ):
            end, size = 0, len(data)
            while end + 4 <= size and data[end] == 0x40 and data[end + 1] == 2:
                end += 4
            if end:
                self._on_puback(data, end)
                if end == size:
                    return
                data = data[end:]
        super().feed_data(data)


def acking_reader(framed: FramedReader) -> AckingStreamReader | None:
    """The AckingStreamReader under ``framed``, if it reads from one."""
    inner = framed.inner
    stream = getattr(inner, "_reader", None) if isinstance(inner, StreamReaderAdapter) else None
    return stream if isinstance(stream, AckingStreamReader) else None


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
    """amqtt's TCP writer, with a bounded close, and writes that do not wait per packet.

    It writes to the transport itself (amqtt's adapter went through the StreamWriter) and
    reads the transport's high-water mark once: nothing here changes it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self._transport = writer.transport
        self._high_water = writer.transport.get_write_buffer_limits()[1]

    def abort(self) -> None:
        self.is_closed = True
        self._transport.abort()

    def write(self, data: bytes | bytearray) -> None:
        if not self.is_closed:
            self._transport.write(data)

    def writable_now(self) -> bool:
        """Whether a packet written now goes out without anyone waiting for the socket."""
        transport = self._transport
        return (
            not self.is_closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self._high_water
        )

    def push(self) -> None:
        """Nothing to do: write() went to the transport."""

    async def flush(self) -> None:
        """Wait for the socket only while the transport holds more than its high-water mark."""
        if not self.is_closed and self._transport.get_write_buffer_size() > self._high_water:
            await self._writer.drain()


class BoundedWebSocketsWriter(_BoundedClose, WebSocketsWriter):
    """amqtt's WebSocket writer, with a bounded close; what is written until the next
    drain goes out as one WebSocket message (MQTT packets need not align with WebSocket
    frames [MQTT-6.0.0-2], so a sender's batch costs one frame, not one per packet).

    amqtt's writer also lost what another task wrote while it was sending."""

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)
        self._chunks: list[bytes | bytearray] = []

    def abort(self) -> None:
        self._protocol.transport.abort()

    def write(self, data: bytes | bytearray) -> None:
        self._chunks.append(data)

    async def drain(self) -> None:
        if self._chunks:
            chunks, self._chunks = self._chunks, []
            # websockets sends any bytes-like message; its annotation says bytes.
            await self._protocol.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))  # type: ignore[arg-type]

    flush = drain

    def writable_now(self) -> bool:
        """Whether push() may send now: open, nothing pending, the socket keeping up."""
        connection = self._protocol
        transport = connection.transport
        return (
            not self._chunks
            and connection.fragmented_send_waiter is None
            and connection.protocol.state is State.OPEN
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]
        )

    def push(self) -> None:
        """Send what was written as one message, without a coroutine: what websockets'
        send() does for one unfragmented binary message when the connection is open and
        its socket keeps up (call only after writable_now())."""
        if not self._chunks:
            return
        chunks, self._chunks = self._chunks, []
        connection = self._protocol
        try:
            message = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            connection.protocol.send_binary(message)  # type: ignore[arg-type]  # bytes-like, as above
            connection.send_data()
        except Exception as exc:  # the connection is broken; its reader sees it end
            logger.debug("WebSocket send failed: %r", exc)
            connection.transport.abort()


class HardenedHandler(BrokerProtocolHandler):
    """One connection's protocol handler: sends queued messages, tracks their acks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retries: set[asyncio.Task[None]] = set()
        self.expired = False
        # Set as soon as CONNECT is read: a takeover may need to cut it before attach().
        self.connection: WriterAdapter | None = None
        self._last_read = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._ended: asyncio.Future[Any] | None = None  # the disconnect waiter, once answered
        self._corked: list[bytes | bytearray] | None = None  # see cork()
        self.max_awaiting_release = 100  # the broker sets its max_inflight_messages

    def abort(self) -> None:
        """Cut the connection without a goodbye (a takeover)."""
        if isinstance(self.connection, BoundedStreamWriter | BoundedWebSocketsWriter):
            self.connection.abort()

    async def start(self) -> None:
        # The reader may read the DISCONNECT before amqtt's start() returns (it handles it
        # in its loop, no longer in a task that runs later): the waiter must exist first.
        self._ended = None
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = asyncio.get_running_loop().create_future()
        await super().start()

    async def handle_disconnect(self, disconnect: Any) -> None:
        # amqtt forgets its waiter once answered; wait_disconnect() may come later.
        if self._disconnect_waiter is not None:
            self._ended = self._disconnect_waiter
        await super().handle_disconnect(disconnect)

    async def wait_disconnect(self) -> Any:
        """The DISCONNECT (or None for a dropped connection), once every message this client
        published and we acknowledged has been routed.

        amqtt sends the PUBACK when it queues an incoming message, and left the queue
        behind when the client went away: a publisher that disconnected right after its
        last PUBACK lost what was still queued. The broker's loop keeps routing while
        this waits; HardenedBroker._handle_message_delivery marks each one done.
        """
        waiter = self._ended or self._disconnect_waiter
        result = await waiter if waiter is not None else None
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

    # -- reading ---------------------------------------------------------------------------
    async def _reader_loop(self) -> None:
        """amqtt's reader loop, without a timeout task and a handler task per packet.

        amqtt wrapped each read in ``asyncio.wait_for`` and ran each packet's handler as a
        task of its own: a fan-out to 1,000 subscribers spent a fifth of its time on the
        tasks its PUBACKs made. Here a timer checks the keep-alive (no packet for
        ``session.keep_alive`` seconds calls :meth:`handle_read_timeout`); PUBACK,
        PINGREQ and QoS 0/1 PUBLISH are handled in the loop without amqtt's decoder, the
        rest is decoded by amqtt and handled in order, except an incoming QoS 2 PUBLISH,
        whose flow waits for the client's PUBREL and so runs as a task, as before.
        Plugins listening to every packet get amqtt's loop.
        """
        reader = self.reader
        callbacks = getattr(self.plugins_manager, "_event_plugin_callbacks", {})
        if not isinstance(reader, FramedReader) or MQTTEvents.PACKET_RECEIVED in callbacks:
            await super()._reader_loop()
            return
        assert self.session is not None and self._reader_ready is not None
        loop = asyncio.get_running_loop()
        limit = self.session.keep_alive if self.session.keep_alive and self.session.keep_alive > 0 else None
        self._last_read = loop.time()
        if limit is not None:
            self._idle_timer = loop.call_later(limit, self._idle_check, limit)
        flows: set[asyncio.Task[None]] = set()
        acking = acking_reader(reader)
        if acking is not None:
            acking.take_pubacks(reader, self.puback_arrived)
        self._reader_ready.set()
        try:
            while True:
                first, body = await reader.next_packet()
                self._last_read = loop.time()
                kind = first >> 4
                if kind == _PUBACK:
                    reader.skip()
                    self.acknowledged(body[0] << 8 | body[1])
                elif kind == PUBLISH and (first & 0x06) != 0x04:  # QoS 0 or 1
                    reader.skip()
                    self._received(first, body)
                    await self.writer.flush()  # type: ignore[union-attr]
                elif kind == _PINGREQ:
                    reader.skip()
                    self.writer.write(_PINGRESP)  # type: ignore[union-attr]
                    await self.writer.flush()  # type: ignore[union-attr]
                else:
                    await self._decoded(reader, flows)
        except asyncio.CancelledError:
            logger.debug("reader of %s cancelled", self.session.client_id)
        except (asyncio.IncompleteReadError, NoDataError, ConnectionError):
            logger.debug("client %s: connection closed", self.session.client_id)
        except Exception as exc:  # a protocol violation, or anything amqtt's decoder raises
            logger.warning("%s Unhandled exception in reader coro: %r", type(self).__name__, exc)
        finally:
            if acking is not None:
                acking.take_pubacks(None, None)
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            for flow in flows:
                flow.cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _decoded(self, reader: FramedReader, flows: set[asyncio.Task[None]]) -> None:
        """Decode the current packet with amqtt and handle it."""
        try:
            fixed_header = await MQTTFixedHeader.from_stream(reader)
            if fixed_header is None:
                raise NoDataError("no more data")
            packet = await packet_class(fixed_header).from_stream(reader, fixed_header=fixed_header)
        except MQTTError:
            logger.debug("Message discarded")
            return
        if isinstance(packet, PublishPacket):  # QoS 2: waits for PUBREL, so not in this loop
            self._check_awaiting_release(packet)
            flow = asyncio.create_task(self.handle_publish(packet))
            flows.add(flow)
            flow.add_done_callback(flows.discard)
            return
        name = _HANDLERS.get(fixed_header.packet_type)
        if name is not None:
            await getattr(self, name)(packet)

    def _check_awaiting_release(self, packet: PublishPacket) -> None:
        """Refuse a QoS 2 PUBLISH past the bound on those awaiting PUBREL: each is kept until
        released, and a client that never sends PUBREL would otherwise fill the broker."""
        assert self.session is not None
        waiting = self.session.inflight_in
        if packet.packet_id in waiting:
            return  # sent again (DUP): it replaces the one kept
        held = sum(len(message.data or b"") for message in waiting.values())
        if (
            len(waiting) >= self.max_awaiting_release
            or held + len(packet.data or b"") > AWAITING_RELEASE_BYTES
        ):
            raise ProtocolViolation(
                f"more than {self.max_awaiting_release} QoS 2 messages or {AWAITING_RELEASE_BYTES} bytes "
                "awaiting PUBREL"
            )

    def puback_arrived(self, data: bytes, end: int) -> None:
        """Whole PUBACKs in ``data[:end]`` (4 bytes each), from :class:`AckingStreamReader`."""
        self._last_read = asyncio.get_running_loop().time()
        freed = False
        for pos in range(2, end, 4):
            if self._release(data[pos] << 8 | data[pos + 1]):
                freed = True
        if freed:
            self._slot_freed()

    def _idle_check(self, limit: float) -> None:
        idle = asyncio.get_running_loop().time() - self._last_read
        if idle >= limit:
            self._idle_timer = None
            self.handle_read_timeout()
        else:
            self._idle_timer = asyncio.get_running_loop().call_later(limit - idle, self._idle_check, limit)

    def _received(self, first: int, body: bytes) -> None:
        """An incoming QoS 0/1 PUBLISH (checked by FramedReader): queued for routing, then
        acknowledged, as amqtt's flow does, without its decoder and tasks."""
        assert self.session is not None and self.writer is not None
        qos, retain = first >> 1 & 3, bool(first & 1)
        end = 2 + (body[0] << 8 | body[1])
        topic = body[2:end].decode("utf-8")
        packet_id = None
        if qos:
            packet_id, end = body[end] << 8 | body[end + 1], end + 2
        data = body[end:]
        message = IncomingApplicationMessage(packet_id, topic, qos, data, retain)
        message.publish_packet = PublishPacket.build(topic, data, packet_id, bool(first & 8), qos, retain)
        self.session.delivered_message_queue.put_nowait(message)
        if qos:
            self.writer.write(bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF)))  # type: ignore[operator]

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
                assert message.packet_id is not None  # in flight: it has one
                message.pubrel_packet = PubrelPacket.build(message.packet_id)
                await self._send_packet(message.pubrel_packet)
            else:
                message.publish_packet = message.build_publish_packet(dup=True)
                await self._send_packet(message.publish_packet)

    def writable_now(self) -> bool:
        """Whether a message may be written from the routing path, without the sender task."""
        writable = getattr(self.writer, "writable_now", None)
        return writable is not None and writable()

    def send_now(self, item: Queued) -> None:
        """Write one queued message; QoS 1/2 stays in session.inflight_out until acknowledged.

        The PUBLISH is encoded once per message (:class:`broker.wire.Publication`), not
        per subscriber; :meth:`flush` waits for the socket when its buffer is full."""
        assert self.session is not None and self.writer is not None
        publication = item.publication or Publication(item.topic, item.data)
        if item.qos == QOS_0:
            packet = publication.packet(QOS_0, item.retain, None)
        else:
            packet_id = self.session.next_packet_id
            message = OutgoingApplicationMessage(packet_id, item.topic, item.qos, item.data, item.retain)
            self.session.inflight_out[packet_id] = message  # before sending: the ack may be quick
            packet = publication.packet(item.qos, item.retain, packet_id)
        if self._corked is not None:
            self._corked.append(packet)
        else:
            self.writer.write(packet)  # type: ignore[arg-type]

    def cork(self) -> None:
        """Collect what send_now() writes until uncork(): one write (one send) for a batch."""
        self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self.writer is not None:
            self.writer.write(corked[0] if len(corked) == 1 else b"".join(corked))  # type: ignore[arg-type]

    def push(self) -> None:
        """Send what send_now() wrote without waiting (after writable_now())."""
        push = getattr(self.writer, "push", None)
        if push is not None:
            push()

    async def flush(self) -> None:
        """Send what send_now() wrote (WebSocket), or wait while the socket is backed up (TCP)."""
        flush = getattr(self.writer, "flush", None)
        if flush is not None:
            await flush()
        elif self.writer is not None:
            await self.writer.drain()

    def _settled(self, packet_id: int, qos: int) -> OutgoingApplicationMessage | None:
        if self.session is None:
            return None
        message = self.session.inflight_out.get(packet_id)
        if message is None or message.qos != qos:
            logger.debug("client %s acknowledged unknown packet id %s", self.session.client_id, packet_id)
            return None
        return message

    def _slot_freed(self) -> None:
        # Only a sender with messages waiting needs the room: with none, the next message
        # is written straight away (HardenedBroker._deliver's direct path) and the sender
        # sleeps on, instead of waking once per PUBACK to find nothing to send.
        if self.session is not None:
            box = outbox(self.session)
            if box.wakeup is not None and len(box):
                box.wakeup()

    def acknowledged(self, packet_id: int) -> None:
        """A PUBACK: the message leaves the in-flight window."""
        if self._release(packet_id):
            self._slot_freed()

    def _release(self, packet_id: int) -> bool:
        """Take a PUBACKed QoS 1 message out of the in-flight window; True if one left it."""
        if self._puback_waiters:
            waiter = self._puback_waiters.get(packet_id)
            if waiter is not None:  # one of amqtt's own flows
                if not waiter.done():
                    waiter.set_result(PubackPacket.build(packet_id))
                return False
        session = self.session
        if session is None:
            return False
        message = session.inflight_out.get(packet_id)
        if message is None or message.qos != QOS_1:
            logger.debug("client %s acknowledged unknown packet id %s", session.client_id, packet_id)
            return False
        del session.inflight_out[packet_id]
        return True

    async def handle_puback(self, puback: PubackPacket) -> None:
        packet_id = puback.variable_header.packet_id if puback.variable_header else None
        if packet_id is None:
            await super().handle_puback(puback)
        else:
            self.acknowledged(packet_id)

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
