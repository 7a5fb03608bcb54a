"""amqtt 0.12.1 made dependable for MQTT 3.1.1 clients, by overriding its internals.

What changes against stock amqtt (each has a test in tests/test_broker_hardening.py):

- Retained messages go to a client only when it SUBSCRIBEs, once per matching topic
  per SUBSCRIBE, and only if the topic plugins let it receive the topic (stock amqtt
  replayed, on every CONNECT, the retained messages matching every filter of every
  client). :meth:`HardenedBroker.may_receive` is the one read check, for live and
  retained delivery alike.
- Every client with clean session off keeps its session (subscriptions, queued QoS 1/2
  messages, messages in flight), anonymous ones included; clean session on discards
  the old session at CONNECT and its own at disconnect. A session is resumed only by
  the same username; another user with that client id starts a new one.
- Each session has one queue, bounded by ``max_queued_messages`` and
  ``max_queued_bytes`` online and offline (:mod:`broker.outbox`: overflow policy and
  why), with a warning naming the client once per overflow episode and a count
  (``dropped_messages``); each connection has
  one sender task that sends it in order with at most
  ``max_inflight_messages`` unacknowledged. A message in flight stays in flight until
  acknowledged or the session ends (stock amqtt dropped it after 5 s or on a drop) and
  is sent again with DUP=1 when the client reconnects [MQTT-4.4.0-1].
- Forwarded messages carry retain=0 [MQTT-3.3.1-9] and QoS min(publish, subscription);
  a client matching several filters gets one copy at the highest granted QoS.
- Keep-alive: no packet for 1.5 x the client's keep-alive closes the connection and
  publishes the will [MQTT-3.1.2-24]; session.keep_alive holds that limit (stock amqtt
  likewise adds its timeout-disconnect-delay to it).
- Credentials are checked before anything touches an existing session: a refused
  CONNECT can no longer discard or take over the session of the client id it claims.
  Taking over a live connection waits until the old one has finished (will included).
- A client publishing to an invalid or $ topic is disconnected (stock amqtt stopped
  serving it but left the connection open).
- Every packet a client sends is framed and checked (:mod:`broker.framing`) before amqtt
  decodes it: at most ``max_packet_bytes`` (1 MiB, as mosquitto.conf's
  message_size_limit), CONNECT first and only once, valid UTF-8 strings, valid flags,
  no bytes past a packet's fields; a violation closes the connection. So does anything
  but a valid CONNECT within ``CONNECT_TIMEOUT`` of connecting (tests/test_broker_malformed.py).

- What one client can make the broker keep is bounded (tests/test_security_broker_memory.py):
  topics and filters longer than ``max_topic_bytes`` are refused like an ACL refusal
  (PUBLISH dropped, SUBACK 0x80), a client holds at most ``max_subscriptions`` filters,
  an UNSUBSCRIBE leaves no empty entry behind, at most ``max_inflight_messages`` QoS 2
  messages (4 MiB) may await PUBREL, and refused publishes are logged per doubling.

$-topics needed nothing: amqtt's matcher already keeps # and +/... off them.

Nothing here blocks the event loop: routing only appends to queues, or writes to an
idle connection whose socket keeps up (never waiting for it), and each sender awaits
its own socket. Plugins' authenticate and topic_filtering still run on this loop and
must not block it. The checks run when a message is routed, not when a queued message
is finally sent.

Speed (fan-out to 1,000 subscribers, reconnect storms, retained replay): each PUBLISH
is encoded once per message (:mod:`broker.wire`); the reader handles PUBACK, PINGREQ
and QoS 0/1 PUBLISH without a task per packet (:class:`HardenedHandler`), and on TCP
whole PUBACKs are taken as they arrive, without waking the reader at all
(:class:`~broker.connection.AckingStreamReader`); a connection's sender is woken by a
PUBACK only when messages wait for the room; routing and the per-connection loop take
queued messages without a task or an ``asyncio.wait`` per message; each topic's readers
(matching filters, one copy per client, the ACL's read check) are worked out once and
remembered until a subscription or the password or ACL file changes
(:meth:`HardenedBroker._readers`); sessions keep their state without a ``transitions``
Machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

import amqtt
from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, WebSocketsReader, WriterAdapter
from amqtt.broker import AMQTT_MAGIC_VALUE_RET_SUBSCRIBED, Broker, Server
from amqtt.contexts import Action, BrokerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol import broker_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker.connection import (
    AckingStreamReader,
    BoundedStreamWriter,
    BoundedWebSocketsWriter,
    HardenedHandler,
    HardenedSession,
    outbox,
)
from broker.credfiles import filter_matcher
from broker.framing import FramedReader, shown
from broker.outbox import Outbox, Queued
from broker.plugins import RulesTopicPlugin
from broker.wire import Publication

__all__ = ["HardenedBroker", "Outbox", "Queued", "check_amqtt_version"]

logger = logging.getLogger(__name__)

PINNED_AMQTT_VERSION = "0.12.1"
# Per client, as mosquitto.conf's max_queued_messages and max_queued_bytes (broker/outbox.py:
# the count must hold a burst the size of the whole retained state; the size bounds memory).
DEFAULT_MAX_QUEUED_MESSAGES = 100_000
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_MESSAGES = 100  # per client, as max_inflight_messages in mosquitto.conf
DEFAULT_MAX_PACKET_BYTES = 1_048_576  # per packet, as mosquitto.conf's message_size_limit
# What one client can make the broker keep besides its queue (tests/test_security_broker_memory.py):
# our topics are short (agents/<id>/assigned); MQTT allows 65,535 bytes, which a client could
# multiply by every subscription it holds.
DEFAULT_MAX_TOPIC_BYTES = 1024  # longer topics and filters are refused like an ACL refusal
DEFAULT_MAX_SUBSCRIPTIONS = 100  # topic filters one client may hold (ours hold one or two)
KEEPALIVE_FACTOR = 1.5  # [MQTT-3.1.2-24]
CONNECT_TIMEOUT = 10.0  # seconds a new connection has to send its CONNECT
TAKEOVER_TIMEOUT = 3.0  # seconds to wait for a replaced connection to finish
_UNKNOWN: Any = object()
_YIELD_EVERY = 64  # a sender with a long queue lets other tasks run this often
_STREAM_LIMIT = 2**16
# Remembered readers per topic (HardenedBroker._readers), bounded like the ACL's answers:
# topics come from clients. An entry costs its topic plus this much per reader and for itself.
ROUTES_CACHE_BYTES = 8 * 1024 * 1024
ROUTE_ENTRY_BYTES = 100  # asyncio.start_server's buffer limit per connection


def check_amqtt_version(installed: str) -> None:
    """Refuse any amqtt but the pinned one: the overrides below copy its internals."""
    if installed != PINNED_AMQTT_VERSION:
        raise ImportError(
            f"broker.hardened overrides internals of amqtt {PINNED_AMQTT_VERSION}, but amqtt "
            f"{installed} is installed; install the pinned version (make install), or re-check "
            "every override in broker/hardened.py against the new amqtt before changing the pin"
        )


check_amqtt_version(getattr(amqtt, "__version__", "unknown"))
# amqtt's BrokerProtocolHandler.init_from_connect builds the Session of every CONNECT
# from this module global: ours keeps its state without a transitions Machine.
broker_handler.Session = HardenedSession  # type: ignore[misc]


class HardenedBroker(Broker):
    """amqtt's Broker with the fixes listed in the module docstring.

    It also keeps each client connection's transport, so that a stop can cut them all.
    """

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any],
        *,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_inflight_messages: int = DEFAULT_MAX_INFLIGHT_MESSAGES,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
        max_topic_bytes: int = DEFAULT_MAX_TOPIC_BYTES,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
    ) -> None:
        limits = (max_queued_messages, max_queued_bytes, max_inflight_messages, max_packet_bytes)
        if min(*limits, max_topic_bytes, max_subscriptions) < 1:
            raise ValueError("the queue, in-flight, packet, topic and subscription limits must be at least 1")
        super().__init__(config)
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.max_inflight_messages = max_inflight_messages
        self.max_packet_bytes = max_packet_bytes
        self.max_topic_bytes = max_topic_bytes
        self.max_subscriptions = max_subscriptions
        self.dropped_messages = 0  # queue overflow drops, all clients, since start
        self.refused_publishes = 0  # PUBLISHes dropped by the ACL or the topic limit, since start
        self.client_transports: set[asyncio.Transport] = set()
        self._live: dict[str, tuple[HardenedHandler, asyncio.Event]] = {}  # client id -> connection
        self._rules_plugins: list[RulesTopicPlugin] | None = _UNKNOWN
        # Each retained message's encoded PUBLISH, shared by every SUBSCRIBE that replays it.
        self._retained_publications: dict[str, tuple[Any, Publication]] = {}
        # Each routed topic's readers (see _readers), the objects they were worked out from.
        self._routes: dict[str, list[tuple[Session, int]]] = {}
        self._routes_bytes = 0
        self._routes_state: tuple[object, ...] = ()

    # -- connections -----------------------------------------------------------------------
    async def stream_connected(self, reader: Any, writer: Any, listener_name: str) -> None:
        with self._tracked(writer.transport):
            await self._client_connected(
                listener_name,
                FramedReader(StreamReaderAdapter(reader), self.max_packet_bytes),
                BoundedStreamWriter(writer),
            )

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        with self._tracked(websocket.transport):
            reader = FramedReader(WebSocketsReader(websocket), self.max_packet_bytes)
            writer = BoundedWebSocketsWriter(websocket)
            await self._client_connected(listener_name, reader, writer)

    async def _create_server_instance(
        self, listener_name: str, kind: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        if kind == ListenerType.TCP:
            # amqtt's asyncio.start_server, with a StreamReader that takes PUBACKs as they arrive.
            loop = asyncio.get_running_loop()
            connected = partial(self.stream_connected, listener_name=listener_name)

            def protocol() -> asyncio.StreamReaderProtocol:
                reader = AckingStreamReader(limit=_STREAM_LIMIT, loop=loop)
                return asyncio.StreamReaderProtocol(reader, connected)

            return await loop.create_server(protocol, address, port, reuse_address=True, ssl=ssl_context)
        if kind != ListenerType.WS:
            return await super()._create_server_instance(listener_name, kind, address, port, ssl_context)
        import websockets  # amqtt's WebSocket library

        # amqtt's call, without permessage-deflate: browsers and mqtt.js offer it, and it
        # compressed each small PUBLISH once per subscriber (most of the broker's CPU in a
        # fan-out over WebSocket) to save little on a LAN.
        return await websockets.serve(
            partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            compression=None,
        )

    @contextmanager
    def _tracked(self, transport: asyncio.Transport) -> Iterator[None]:
        self.client_transports.add(transport)
        try:
            yield
        finally:
            self.client_transports.discard(transport)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # Only read and validate CONNECT: which session it gets is decided after authentication.
        # Whatever goes wrong before a valid CONNECT closes the connection: stock amqtt left
        # it open after garbage, a PUBLISH first or an undecodable CONNECT, and waited
        # forever for a CONNECT that never came.
        try:
            return await asyncio.wait_for(
                HardenedHandler.init_from_connect(reader, writer, self.plugins_manager), CONNECT_TIMEOUT
            )
        except MQTTError:
            await writer.close()
            raise
        except Exception as exc:  # garbage can fail anywhere in amqtt's decoder
            logger.debug("%s:%s: no valid CONNECT: %r", remote_address, remote_port, exc)
            await writer.close()
            raise AMQTTError(exc) from exc

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Server,
        listener_name: str,
    ) -> None:
        assert isinstance(handler, HardenedHandler)
        handler.connection = writer
        handler.max_awaiting_release = self.max_inflight_messages
        incoming = client_session
        incoming.parent = 0
        if not await self._authenticate(incoming, self.listeners_config[listener_name]):
            handler.attach(incoming, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            return
        if not incoming.client_id:
            incoming.client_id = gen_client_id()
        client_id = incoming.client_id
        finished = asyncio.Event()
        try:
            await self._take_over(client_id, handler, finished)
            session = await self._open_session(incoming)
            session.transitions.connect()
            handler.attach(session, reader, writer)
            self._sessions[client_id] = (session, handler)
            await handler.mqtt_connack_authorize(True)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=session
            )
            await handler.start()
            sender = asyncio.create_task(self._deliver(session, handler), name=f"mqtt-send-{client_id}")
            try:
                await self._client_message_loop(session, handler)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        finally:
            owner, owner_handler = self._sessions.get(client_id, (None, None))
            if owner is not None and owner_handler is handler and owner.transitions.state == "connected":
                # Ended by an error or a cancellation, not through _handle_disconnect: the
                # client is gone all the same (will included), or its session stays "connected".
                gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                gone.set_result(None)
                with suppress(Exception):
                    await self._handle_disconnect(owner, handler, gone)
            if self._live.get(client_id, (None,))[0] is handler:
                del self._live[client_id]
            finished.set()

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """amqtt's loop for one connection's PUBLISH, SUBSCRIBE, UNSUBSCRIBE and DISCONNECT.

        Two changes: messages already queued are routed one after another without an
        ``asyncio.wait`` over four futures for each, and a SUBSCRIBE no longer formats
        every subscription of the broker into a debug message nobody reads (amqtt built
        that string each time: quadratic in the clients of a reconnect storm)."""
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        delivered = client_session.delivered_message_queue
        connected = True
        while connected:
            try:
                done, _ = await asyncio.wait(
                    [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if disconnect_waiter in done:
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    connected = False
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if wait_deliver in done:
                    if not await self._handle_message_delivery(client_session, handler, wait_deliver):
                        break
                    routed = 0
                    while not (disconnect_waiter.done() or delivered.empty()) and routed < _YIELD_EVERY:
                        message = delivered.get_nowait()
                        try:
                            await self._route(client_session, handler, message)
                        finally:
                            delivered.task_done()
                        routed += 1
                    wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
            except asyncio.CancelledError:
                break
        waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    async def _take_over(self, client_id: str, handler: HardenedHandler, finished: asyncio.Event) -> None:
        """End any live connection with this client id [MQTT-3.1.4-2], then register ours."""
        while (live := self._live.get(client_id)) is not None:
            old_handler, old_finished = live
            logger.info("client %s connected again: closing its previous connection", client_id)
            await old_handler.handle_connection_closed()
            old_handler.abort()
            try:
                await asyncio.wait_for(old_finished.wait(), TAKEOVER_TIMEOUT)
            except TimeoutError:
                logger.warning("client %s: previous connection did not finish; taking over anyway", client_id)
                if self._live.get(client_id) is live:
                    del self._live[client_id]
        self._live[client_id] = (handler, finished)

    async def _open_session(self, incoming: Session) -> Session:
        """The session this connection uses: the stored one resumed, or the incoming one."""
        client_id = incoming.client_id
        assert client_id is not None
        existing = self._sessions.get(client_id, (None, None))[0]
        if existing is not None and existing.username != incoming.username:
            logger.info("client %s: new username, so its previous session is discarded", client_id)
        if existing is not None and (
            incoming.clean_session or existing.clean_session or existing.username != incoming.username
        ):
            await self._delete_session(client_id)
            existing = None
        if existing is None:
            session = incoming
        else:
            session = existing
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "username",
                "password",
                "remote_address",
                "remote_port",
                "ssl_object",
                "is_anonymous",
            ):
                setattr(session, name, getattr(incoming, name))
            session.attributes.update(incoming.attributes)
            session.parent = 1  # CONNACK's session present
            if session.transitions.state == "connected":  # a takeover that timed out
                session.transitions.disconnect()
        # amqtt's reader waits this long for each packet, then calls handle_read_timeout().
        session.keep_alive = KEEPALIVE_FACTOR * incoming.keep_alive if incoming.keep_alive > 0 else 0  # type: ignore[assignment]
        return session

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        result = disconnect_waiter.result()
        if not isinstance(result, DisconnectPacket) and client_session.will_flag:
            logger.debug("client %s went away without DISCONNECT: sending its will", client_session.client_id)
            await self._broadcast_message(
                client_session,
                client_session.will_topic,
                client_session.will_message,
                client_session.will_qos,
            )
            if client_session.will_retain:
                await self.retain_message(
                    client_session,
                    client_session.will_topic,
                    client_session.will_message,
                    client_session.will_qos,
                )
        await self._stop_handler(handler)
        client_id = client_session.client_id
        # After a takeover the session belongs to the new connection: leave it alone.
        if client_id is not None and self._sessions.get(client_id, (None, None))[1] is handler:
            client_session.transitions.disconnect()
            if client_session.clean_session:  # [MQTT-3.1.2-6]: it lasts as long as the connection
                await self._cleanup_session(client_id)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=client_id, client_session=client_session
        )

    async def _session_monitor(self) -> None:
        # amqtt also discarded every anonymous session here: no offline queue for them.
        while True:
            expiry = self.config.session_expiry_interval
            gone = [
                client_id
                for client_id, (session, _) in self._sessions.items()
                if session.transitions.state == "disconnected"
                and (
                    session.clean_session
                    or (
                        expiry is not None
                        and session.last_disconnect_time is not None
                        and session.last_disconnect_time < time.time() - expiry
                    )
                )
            ]
            for client_id in gone:
                await self._cleanup_session(client_id)
            await asyncio.sleep(1)

    async def _delete_session(self, client_id: str) -> None:
        session = self._sessions.get(client_id, (None, None))[0]
        await super()._delete_session(client_id)
        if session is not None:
            _forget(session)

    async def _cleanup_session(self, client_id: str) -> None:
        session = self._sessions.get(client_id, (None, None))[0]
        await super()._cleanup_session(client_id)
        if session is not None:
            _forget(session)

    # -- subscriptions and retained messages -----------------------------------------------
    def too_long(self, topic: str) -> bool:
        """Whether a topic or filter is longer than ``max_topic_bytes`` in UTF-8."""
        return len(topic) > self.max_topic_bytes or len(topic.encode()) > self.max_topic_bytes

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter = subscription[0]
        held = _filters(session)
        if self.too_long(topic_filter) or (topic_filter not in held and len(held) >= self.max_subscriptions):
            logger.info(
                "client %s: subscription to %s refused (filters are limited to %d bytes, %d per client)",
                shown(session.client_id),
                shown(topic_filter),
                self.max_topic_bytes,
                self.max_subscriptions,
            )
            return AMQTT_MAGIC_VALUE_RET_SUBSCRIBED  # SUBACK 0x80
        granted = await super().add_subscription(subscription, session)
        self._routes_changed()
        if granted != AMQTT_MAGIC_VALUE_RET_SUBSCRIBED:
            held.add(topic_filter)
            # amqtt kept the old QoS on a repeated SUBSCRIBE; it must replace it [MQTT-3.8.4-3].
            entries = self._subscriptions.get(subscription[0], [])
            for index, (subscriber, _qos) in enumerate(entries):
                if subscriber.client_id == session.client_id:
                    entries[index] = (session, granted)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = super()._del_subscription(a_filter, session)
        if deleted:
            self._routes_changed()
            _filters(session).discard(a_filter)
        return deleted

    async def _handle_unsubscription(
        self, client_session: Session, handler: BrokerProtocolHandler, unsubscribe_waiter: asyncio.Future[Any]
    ) -> None:
        """amqtt's, without leaving an empty entry behind for each filter: a client
        subscribing and unsubscribing distinct filters grew the broker (and the scan of
        every filter that each PUBLISH makes) without bound."""
        unsubscription = unsubscribe_waiter.result()
        for topic_filter in unsubscription.topics:
            self._del_subscription(topic_filter, client_session)
            if not self._subscriptions.get(topic_filter, True):
                del self._subscriptions[topic_filter]
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_UNSUBSCRIBED, client_id=client_session.client_id, topic=topic_filter
            )
        await handler.mqtt_acknowledge_unsubscription(unsubscription.packet_id)

    async def _handle_subscription(
        self, client_session: Session, handler: BrokerProtocolHandler, subscribe_waiter: asyncio.Future[Any]
    ) -> None:
        subscription = subscribe_waiter.result()
        codes = [await self.add_subscription(topic, client_session) for topic in subscription.topics]
        await handler.mqtt_acknowledge_subscription(subscription.packet_id, codes)
        accepted: list[tuple[str, int]] = []
        for (topic_filter, requested_qos), code in zip(subscription.topics, codes, strict=True):
            if code == AMQTT_MAGIC_VALUE_RET_SUBSCRIBED:
                continue
            accepted.append((topic_filter, code))
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_SUBSCRIBED,
                client_id=client_session.client_id,
                topic=topic_filter,
                qos=requested_qos,
            )
        await self._send_retained(client_session, accepted)

    async def _send_retained(self, session: Session, filters: list[tuple[str, int]]) -> None:
        """Queue, once each, the retained messages matching this SUBSCRIBE's accepted filters."""
        retained_messages = self._retained_messages
        matches: dict[str, tuple[Any, int]] = {}
        for topic_filter, granted in filters:
            if "+" in topic_filter or "#" in topic_filter:
                matching = filter_matcher(topic_filter)
                topics: Any = [topic for topic in retained_messages if matching(topic)] if matching else ()
            else:
                topics = (topic_filter,) if topic_filter in retained_messages else ()
            for topic in topics:
                retained = retained_messages[topic]
                qos = granted if retained.qos is None else min(granted, retained.qos)
                if topic not in matches or qos > matches[topic][1]:
                    matches[topic] = (retained, qos)
        for topic, (retained, qos) in matches.items():
            if await self.may_receive(session, topic):
                publication = self._retained_publication(topic, retained)
                self._enqueue(session, Queued(topic, retained.data, qos, True, publication), exempt=True)

    def _retained_publication(self, topic: str, retained: Any) -> Publication:
        cached = self._retained_publications.get(topic)
        if cached is None or cached[0] is not retained or cached[1].data is not retained.data:
            cached = self._retained_publications[topic] = (retained, Publication(topic, retained.data))
        return cached[1]

    async def retain_message(
        self, source_session: Session | None, topic_name: str | None, data: Any, qos: int | None = None
    ) -> None:
        await super().retain_message(source_session, topic_name, data, qos)
        if topic_name is not None and not data:
            self._retained_publications.pop(topic_name, None)

    def _matches(self, topic: str, a_filter: str) -> bool:
        # amqtt split both strings on each call; the same rules, as one compiled regex per filter.
        if "+" not in a_filter and "#" not in a_filter:
            return a_filter == topic
        matcher = filter_matcher(a_filter)
        return matcher is not None and matcher(topic)

    async def may_receive(self, session: Session, topic: str) -> bool:
        """Whether the topic plugins let ``session`` receive a message on ``topic``.

        The one read check (amqtt's action "receive"), for live and retained delivery.
        """
        rules = self._rule_plugins()
        if rules is not None:
            return all(plugin.may_read(session, topic) for plugin in rules)
        return await self._topic_filtering(session, topic=topic, action=Action.RECEIVE)

    async def may_publish(self, session: Session, topic: str) -> bool:
        """Whether the topic plugins let ``session`` publish on ``topic`` (amqtt's "publish")."""
        rules = self._rule_plugins()
        if rules is not None:
            return all(plugin.may_write(session, topic) for plugin in rules)
        return await self._topic_filtering(session, topic=topic, action=Action.PUBLISH)

    def _rule_plugins(self) -> list[RulesTopicPlugin] | None:
        """The topic plugins, when all are ours (the usual case): their synchronous read check
        then answers for each delivery without amqtt's plugin manager, which starts a task
        per plugin per call (a profile of fan-out to 1,000 subscribers spent a seventh of the
        broker's time there). ``_topic_plugins`` is amqtt's; its version is pinned."""
        if self._rules_plugins is _UNKNOWN:  # loaded once, in amqtt's __init__
            plugins = getattr(self.plugins_manager, "_topic_plugins", None) or []
            ours = bool(plugins) and all(isinstance(p, RulesTopicPlugin) for p in plugins)
            self._rules_plugins = list(plugins) if ours else None
        return self._rules_plugins

    # -- publishing ------------------------------------------------------------------------
    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        app_message = wait_deliver.result()
        if app_message is None:
            return True
        try:
            return await self._route(client_session, handler, app_message)
        finally:
            # Taken from the session's queue: HardenedHandler.wait_disconnect waits for these.
            client_session.delivered_message_queue.task_done()

    async def _route(self, client_session: Session, handler: BrokerProtocolHandler, app_message: Any) -> bool:
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message
        )
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            # [MQTT-4.7.3-1], [MQTT-3.3.2-2], [MQTT-4.7.2-1]. amqtt left the loop here, and
            # with it a connection that stayed open but was no longer served.
            logger.warning(
                "client %s published to invalid topic %r: disconnecting",
                shown(client_session.client_id),
                shown(topic),
            )
            await handler.handle_connection_closed()
            return True
        if self.too_long(topic):
            self._refused(client_session, topic, f"longer than {self.max_topic_bytes} bytes")
            return True
        if not await self.may_publish(client_session, topic):
            self._refused(client_session, topic, "no write access")
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=app_message
        )
        # amqtt passed no QoS here, so every subscriber got its subscription's QoS.
        await self._broadcast_message(client_session, topic, app_message.data, app_message.qos or QOS_0)
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, app_message.data, app_message.qos)
        return True

    async def publish_local(self, messages: list[tuple[str, bytes, bool]]) -> int:
        """Route ``messages`` (topic, payload, retained?) in order, as QoS 1 PUBLISHes of a
        client would be routed, but from this process: no packet, no PUBACK, no ACL check
        (the caller is the service, which may write every topic it publishes). Returns how
        many were taken, all of them: each is queued for its subscribers and, retained,
        in the retained store before the next, as a PUBACK would promise."""
        for topic, data, retain in messages:
            await self._broadcast_message(None, topic, data, QOS_1)
            if retain:
                await self.retain_message(None, topic, data, QOS_1)
        return len(messages)

    def _refused(self, session: Session, topic: str, why: str) -> None:
        """Count a dropped PUBLISH; log the 1st, 2nd, 4th, 8th... of each session, so that a
        client publishing where it may not costs the log a line per doubling, not one each."""
        self.refused_publishes += 1
        count = session.attributes[_REFUSED] = session.attributes.get(_REFUSED, 0) + 1
        if count & (count - 1) == 0:
            logger.info(
                "client %s may not publish to %s (%s); dropped (%d refused from this client so far)",
                shown(session.client_id),
                shown(topic),
                why,
                count,
            )

    async def _broadcast_loop(self) -> None:
        """amqtt's loop, routing each message in order, without a task and an
        ``asyncio.wait`` per message (routing only queues and writes)."""
        queue, shutdown = self._broadcast_queue, self._broadcast_shutdown_waiter
        routed = 0
        try:
            while not shutdown.done():
                if queue.empty():
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait([getter, shutdown], return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        break
                    broadcast = getter.result()
                else:
                    broadcast = queue.get_nowait()
                try:
                    await self._fan_out(broadcast)
                except Exception:
                    logger.exception("routing a message to %r failed; skipped", broadcast.get("topic"))
                routed += 1
                if routed % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a backlog of messages must not starve the connections
        except BaseException:
            logger.exception("Broadcast loop stopped by exception")
            raise

    async def _run_broadcast(self, running_tasks: Any) -> None:
        # amqtt's step, one message; the loop above calls _fan_out itself.
        await self._fan_out(await self._broadcast_queue.get())

    async def _fan_out(self, broadcast: Any) -> None:
        """Queue (or write) one message for each matching subscriber that may read it."""
        topic, data, publish_qos = broadcast["topic"], broadcast["data"], broadcast.get("qos")
        if not topic or data is None:
            return
        publication = Publication(topic, data)  # encoded once, for every subscriber
        rules = self._rule_plugins()
        if rules is not None:
            readers = self._readers(topic, rules)
        else:  # a topic plugin not ours: its read check is amqtt's coroutine, for each delivery
            readers = [
                (session, granted)
                for session, granted in self._subscribers(topic)
                if await self.may_receive(session, topic)
            ]
        for session, granted in readers:
            qos = granted if publish_qos is None else min(publish_qos, granted)
            try:
                self._enqueue(session, Queued(topic, data, qos, False, publication))
            except Exception:  # one broken connection must not cost the others this message
                logger.exception("queueing %s for client %s failed", topic, session.client_id)

    def _subscribers(self, topic: str) -> list[tuple[Session, int]]:
        """Each client with a filter matching ``topic``, once, at the highest QoS it was granted."""
        targets: dict[str, tuple[Session, int]] = {}
        for topic_filter, subscribers in self._subscriptions.items():
            if self._matches(topic, topic_filter):
                for session, granted in subscribers:
                    known = targets.get(session.client_id or "")
                    if known is None or granted > known[1]:
                        targets[session.client_id or ""] = (session, granted)
        return list(targets.values())

    def _readers(self, topic: str, rules: list[RulesTopicPlugin]) -> list[tuple[Session, int]]:
        """:meth:`_subscribers` that may read ``topic``, remembered per topic.

        A fan-out to 1,000 subscribers spent about a tenth of its time matching filters and
        asking the ACL for each subscriber. The answer depends only on the subscriptions
        (any change forgets every answer: :meth:`_routes_changed`), on the users and ACL
        the topic plugins hold (a reload replaces those objects, which forgets every
        answer) and on each session's own username and client id, which a session keeps.
        Whether each reader is connected is still asked for each message (:meth:`_enqueue`).
        What is remembered is bounded in bytes, as the ACL's answers are."""
        state = tuple(item for plugin in rules for item in plugin.rules_state())
        known = self._routes_state
        if len(state) != len(known) or any(a is not b for a, b in zip(state, known, strict=True)):
            self._routes_changed()
            self._routes_state = state
        readers = self._routes.get(topic)
        if readers is None:
            readers = []
            for session, granted in self._subscribers(topic):
                if all(plugin.may_read(session, topic) for plugin in rules):
                    readers.append((session, granted))
                else:
                    logger.debug("client %s may not receive %s", session.client_id, topic)
            cost = len(topic) + ROUTE_ENTRY_BYTES * (1 + len(readers))
            if self._routes_bytes + cost > ROUTES_CACHE_BYTES:
                self._routes_changed()
            self._routes[topic] = readers
            self._routes_bytes += cost
        return readers

    def _routes_changed(self) -> None:
        """Forget the remembered readers of every topic (:meth:`_readers`)."""
        self._routes.clear()
        self._routes_bytes = 0

    def _enqueue(self, session: Session, item: Queued, *, exempt: bool = False) -> None:
        if session.transitions.state != "connected" and (session.clean_session or item.qos == QOS_0):
            return  # kept for an absent client: QoS 1/2, clean session off [MQTT-3.1.2-5]
        box = outbox(session)
        if box.direct is not None and box.direct(item):
            return  # an idle connection: written at once, no task switch
        # While a retained replay is queued, live messages behind it may use its room.
        allowance = len(self._retained_messages)
        dropped = box.push(
            item,
            limit=self.max_queued_messages,
            limit_bytes=self.max_queued_bytes,
            exempt=exempt,
            allowance=allowance,
        )
        if dropped:
            self.dropped_messages += dropped
            if not box.overflowing:
                box.overflowing = True
                logger.warning(
                    "client %s has %d messages (%d bytes) queued, at the limit of %d messages or "
                    "%d bytes: dropping the oldest (QoS 0 first) until it catches up",
                    session.client_id,
                    len(box),
                    box.queued_bytes,
                    self.max_queued_messages,
                    self.max_queued_bytes,
                )

    async def _deliver(self, session: Session, handler: HardenedHandler) -> None:
        """One connection's sender: unacknowledged messages again, then the queue, in order.

        While it waits with nothing queued, routing writes a message straight to the
        socket (``Outbox.direct``) when the window has room and the socket keeps up."""
        box = outbox(session)
        ready = asyncio.Event()
        window = self.max_inflight_messages
        inflight = session.inflight_out
        waiting = box.order  # empty: nothing queued (a dropped message's tombstone counts)
        writable = getattr(handler.writer, "writable_now", None)
        push = getattr(handler.writer, "push", None)
        if writable is None:  # a writer without the non-waiting path: everything via the queue

            def direct(item: Queued) -> bool:
                return False

        else:

            def direct(item: Queued) -> bool:
                if waiting or len(inflight) >= window or handler.session is not session or not writable():
                    return False
                handler.send_now(item)
                if push is not None:
                    push()
                return True

        box.wakeup = ready.set
        try:
            await handler.resend_inflight()
            while True:
                # Cleared before looking at the queue: a message queued while this sends or
                # waits for the socket sets it again, so it is not slept through.
                ready.clear()
                sent = 0
                handler.cork()
                try:
                    while len(inflight) < window and (item := box.pop()):
                        handler.send_now(item)
                        sent += 1
                        if sent % _YIELD_EVERY == 0:
                            handler.uncork()
                            await handler.flush()
                            await asyncio.sleep(0)
                            handler.cork()
                finally:
                    handler.uncork()
                if sent:
                    await handler.flush()
                if box.overflowing and not len(box):
                    box.overflowing = False
                    logger.info(
                        "client %s caught up; %d messages dropped so far", session.client_id, box.dropped
                    )
                box.direct = direct
                try:
                    await ready.wait()  # a new message, or an acknowledgement freeing the window
                finally:
                    box.direct = None
        finally:
            if box.wakeup == ready.set:
                box.wakeup = None


_FILTERS = "orderbus.broker.filters"  # keys in Session.attributes, amqtt's extension point
_REFUSED = "orderbus.broker.refused"


def _filters(session: Session) -> set[str]:
    """The topic filters this session holds (amqtt keeps them per filter, not per session)."""
    held = session.attributes.get(_FILTERS)
    if held is None:
        held = session.attributes[_FILTERS] = set()
    return held


def _forget(session: Session) -> None:
    """Drop what a discarded session still held for its client."""
    outbox(session).clear()
    session.inflight_out.clear()
    session.inflight_in.clear()
