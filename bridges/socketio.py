"""The Socket.IO bridge: ``python -m bridges.socketio``.

Speaks the protocol of the project's original plan (docs/bridges.md) so apps written
with ``socket.io-client`` against it work unchanged: rooms ``admin``, ``delivery``,
``delivery:<agentId>`` and ``customer:<userId>``; events ``order:new``,
``order:status:updated`` and ``order:assigned``. Each socket logs in with a bearer token from
``POST /api/v1/auth/token`` in the handshake (``io(url, {auth: {token}})``); its
role decides the rooms it is put in and may join.

It knows the service only through its public interfaces: tokens are checked by the
REST API (``GET /auth/me``, :mod:`bridges.identity`), events come from MQTT (the
bridges' read-only login, :class:`contract.link.MqttFeed`), topics and the version
rule from :mod:`contract`, and its settings are its own (:mod:`bridges.settings`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
import uvicorn
from paho.mqtt.client import MQTTMessage

import contract
from contract.link import MqttFeed

from .identity import ADMIN, ApiUnavailable, Identity, TokenCache, TokenChecker, agent_room, customer_room
from .settings import BridgeSettings, MissingBridgeSecret

__all__ = [
    "CustomerFeeds",
    "Gate",
    "Identity",
    "SocketBridge",
    "agent_room",
    "customer_room",
    "main",
    "route",
    "seed_payload",
]

logger = logging.getLogger(__name__)


def seed_payload(event: dict) -> dict:
    """What the seed's screens read (orderId, status, estimatedTime, timestamp) plus the full order."""
    order = event["order"]
    return {
        "orderId": order["id"],
        "status": order["status"],
        "estimatedTime": order.get("eta"),
        "timestamp": event["occurred_at"],
        "agentId": order.get("agent_id"),
        "version": order["version"],
        "event": event["event"],
        "eventId": event["event_id"],
        "order": order,
    }


def route(topic: str, event: dict) -> list[tuple[str, list[str], dict]]:
    """The Socket.IO emits for one MQTT message: (event name, rooms, payload)."""
    if topic == contract.ORDERS_NEW and event.get("event") == "order.created":
        return [("order:new", [ADMIN], seed_payload(event))]
    if contract.order_from_status_topic(topic) is None or "order" not in event:
        return []
    kind, data = event["event"], seed_payload(event)
    agent = data["agentId"]
    if kind == "order.created":
        return []  # announced by orders/new
    if kind == "order.assigned":
        return [("order:assigned", [ADMIN, *([agent_room(agent)] if agent else [])], data)]
    # Every other change (status, unassignment, edits, offers, delays): the seed's status event.
    # Agents get their own orders only: the MQTT ACL does not let them read orders/# either.
    return [("order:status:updated", [ADMIN, *([agent_room(agent)] if agent else [])], data)]


def customer_payload(feed: dict, order: dict) -> dict:
    """What a customer's socket gets for one of its orders: the seed's fields and the order as
    the customer's feed shows it (no agent ids, the courier's first name while picked up)."""
    return {
        "orderId": order["id"],
        "number": order.get("number"),
        "status": order["status"],
        "estimatedTime": order.get("eta"),
        "timestamp": feed["updated_at"],
        "version": feed["version"],
        "event": feed["event"],
        "eventId": feed["event_id"],
        "order": order,
    }


class CustomerFeeds:
    """Turns customers' feeds (``customers/<id>/orders``, each the customer's whole view) into
    per-order events for the room ``customer:<id>``: an order new to the feed is ``order:new``,
    one whose view changed ``order:status:updated``. Keeps the newest feed per customer (at
    most ``limit`` customers, the least recently changed forgotten first); an older or equal
    version is not news. Retained feeds on the bridge's first session are only recorded."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._held: OrderedDict[str, tuple[int, dict[str, dict]]] = OrderedDict()

    def emits(self, customer: str, feed: dict, *, retained: bool, first_session: bool) -> list:
        version = int(feed["version"])
        held_version, before = self._held.get(customer, (0, {}))
        if version <= held_version:
            return []
        orders = {str(o["id"]): o for o in feed["orders"]}
        self._held[customer] = (version, orders)
        self._held.move_to_end(customer)
        if len(self._held) > self.limit:
            self._held.popitem(last=False)
        if retained and first_session:
            return []  # current state at start-up: clients read it over REST
        room = [customer_room(customer)]
        return [
            (
                "order:new" if order_id not in before else "order:status:updated",
                room,
                customer_payload(feed, o),
            )
            for order_id, o in orders.items()
            if before.get(order_id) != o
        ]


class Gate:
    """Decides which MQTT messages are news for the Socket.IO clients.

    Each order's messages carry its ``version``. A live message is news when its version is
    newer than the last one emitted for that order on that kind of topic (``orders/new`` or
    ``orders/<id>/status``): the relay may publish an event again (retries, rehydration after a
    broker restart). A *retained* message is the broker replaying current state in answer to
    our SUBSCRIBE. On the bridge's first session that state is what clients load over REST when
    they open, so it only records the versions. On a later session (the bridge lost the broker
    and came back) the retained states newer than what was emitted are the changes made while
    the bridge was away; they are emitted then, so sockets never miss a status. A catch-up gives
    each order's latest state, not every step in between; an order created during the gap is
    announced with ``order:new`` first.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.new = contract.VersionGate(limit)  # order id -> version, from orders/new
        self.status = contract.VersionGate(limit)  # from orders/<id>/status
        self.customers = CustomerFeeds(limit)  # customer id -> its newest feed

    def emits(
        self, topic: str, payload: bytes, *, retained: bool, first_session: bool
    ) -> list[tuple[str, list[str], dict]]:
        status_of = contract.order_from_status_topic(topic)
        event = contract.loads(payload)
        customer = contract.customer_from_orders_topic(topic)
        if customer is not None and event is not None:
            return self.customers.emits(customer, event, retained=retained, first_session=first_session)
        if event is None:  # a finished order's retained state was cleared: forget the order
            if status_of is not None:
                self.new.forget(status_of)
                self.status.forget(status_of)
            return []
        order = event.get("order")
        if not isinstance(order, dict) or not (status_of is not None or topic == contract.ORDERS_NEW):
            return []  # worklists and presence: not part of the seed's events
        order_id, version = str(order["id"]), int(order["version"])
        held = self.status if status_of is not None else self.new
        known = order_id in self.new or order_id in self.status
        if not held.offer(order_id, version):
            return []  # a duplicate, or older than what the clients already have
        if retained and first_session:
            return []  # current state at start-up: clients read it over REST
        emits = route(topic, event)
        if retained and status_of is not None and not known:
            # Created while the bridge was away: its orders/new message was missed (or replaced).
            self.new.offer(order_id, version)
            emits = [("order:new", [ADMIN], seed_payload(event)), *emits]
        return emits


class SocketBridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        origins = settings.socketio_cors_origins.strip()
        cors = "*" if origins == "*" else [o.strip() for o in origins.split(",") if o.strip()]
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=cors)
        self.app = socketio.ASGIApp(self.sio, other_asgi_app=self._http)
        self.feed: MqttFeed | None = None
        self.gate = Gate()
        self.tokens = TokenChecker(settings.api_url, TokenCache(settings.token_cache_seconds))
        self._tokens: dict[str, str] = {}  # sid -> bearer token, re-checked every recheck period
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("join-room", self._join)
        self.sio.on("leave-room", self._leave)

    # --- sockets ------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict, auth: dict | None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: send auth {token}")
        try:
            who = await self.tokens.identify(token)
        except ApiUnavailable as exc:
            logger.warning("socket %s refused: cannot check its token: %s", sid, exc)
            raise socketio.exceptions.ConnectionRefusedError(
                "unavailable: the token cannot be checked now (the API does not answer); try again later"
            ) from None
        if who is None:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: invalid or expired token")
        if not who.default_rooms():
            raise socketio.exceptions.ConnectionRefusedError(f"forbidden: no rooms for role {who.role}")
        await self.sio.save_session(sid, {"who": who})
        self._tokens[sid] = token
        for room in who.default_rooms():
            await self.sio.enter_room(sid, room)
        logger.info("socket %s: %s %s in %s", sid, who.role, who.user_id, who.default_rooms())

    async def _disconnect(self, sid: str, reason: object = None) -> None:
        self._tokens.pop(sid, None)

    async def _recheck(self) -> None:
        """Disconnect sockets whose token expired or was revoked (logout, deactivation).

        Always asks the API (never the cache) and caches its answer. While the API does not
        answer, connected sockets stay: they were checked, and only new ones are refused.
        """
        while True:
            await asyncio.sleep(self.settings.socketio_recheck_seconds)
            sids: dict[str, list[str]] = {}
            for sid, token in list(self._tokens.items()):
                sids.setdefault(token, []).append(sid)
            answers = await asyncio.gather(*(self.tokens.ask(t) for t in sids), return_exceptions=True)
            unavailable = 0
            for held, answer in zip(sids.values(), answers, strict=True):
                if isinstance(answer, Exception):  # ApiUnavailable: the API gave no answer
                    unavailable += 1
                elif answer is None:
                    for sid in held:
                        logger.info("socket %s: token no longer valid; disconnecting", sid)
                        self._tokens.pop(sid, None)
                        await self.sio.disconnect(sid)
            if unavailable:
                logger.warning(
                    "recheck: the API at %s does not answer; %d token(s) not checked, their sockets stay",
                    self.settings.api_url,
                    unavailable,
                )

    async def _join(self, sid: str, room: object) -> dict:
        who: Identity = (await self.sio.get_session(sid))["who"]
        if not isinstance(room, str) or not who.may_join(room):
            logger.warning("socket %s (%s %s) refused room %r", sid, who.role, who.user_id, room)
            return {"ok": False, "room": room, "error": "forbidden"}
        await self.sio.enter_room(sid, room)
        return {"ok": True, "room": room}

    async def _leave(self, sid: str, room: object) -> dict:
        if isinstance(room, str):
            await self.sio.leave_room(sid, room)
        return {"ok": True, "room": room}

    async def _http(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """``GET /healthz``: 200 once the MQTT feed is subscribed, 503 before."""
        if scope["type"] != "http":
            return
        ok = scope["path"] == "/healthz" and self.feed is not None and self.feed.connected.is_set()
        status = 200 if ok else (503 if scope["path"] == "/healthz" else 404)
        body = b"ok" if ok else b"not ready" if status == 503 else b"not found"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})

    # --- the feed -----------------------------------------------------------------

    async def _pump(self, inbox: asyncio.Queue) -> None:
        while True:
            topic, payload, retained, first_session = await inbox.get()
            try:
                emits = self.gate.emits(topic, payload, retained=retained, first_session=first_session)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring a message on %s: %s", topic, exc)
                continue
            for name, rooms, data in emits:
                await self.sio.emit(name, data, to=rooms)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()

        def on_message(message: MQTTMessage) -> None:  # paho's thread: hand off only
            first_session = self.feed is not None and self.feed.sessions == 1
            loop.call_soon_threadsafe(
                inbox.put_nowait, (message.topic, bytes(message.payload), message.retain, first_session)
            )

        address = self.settings.broker_address()  # its own login: the username is its client id
        filters = (contract.ORDERS_ALL, contract.AGENTS_ALL, contract.CUSTOMER_ORDERS_FILTER)
        self.feed = MqttFeed(address, address.username or "", on_message, filters=filters)
        self.feed.start()  # after the assignment: on_message reads the feed's session count
        pump = asyncio.create_task(self._pump(inbox))
        recheck = asyncio.create_task(self._recheck())
        config = uvicorn.Config(
            self.app,
            host=self.settings.socketio_host,
            port=self.settings.socketio_port,
            ws="wsproto",
            lifespan="off",
            log_level=self.settings.log_level.lower(),
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            pump.cancel()
            recheck.cancel()
            await asyncio.to_thread(self.feed.stop)


def main() -> None:
    settings = BridgeSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s socketio %(levelname)s %(message)s")
    logger.info("tokens are checked at %s/auth/me", settings.api_url)
    try:
        bridge = SocketBridge(settings)
        asyncio.run(bridge.serve())
    except MissingBridgeSecret as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
