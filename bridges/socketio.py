"""The Socket.IO bridge: ``python -m bridges.socketio``.

Speaks the protocol of the project's original plan (docs/bridges.md) so apps written
with ``socket.io-client`` against it work unchanged: rooms ``admin``, ``delivery``
and ``delivery:<agentId>``; events ``order:new``, ``order:status:updated`` and
``order:assigned``. Each socket logs in with a bearer token from
``POST /api/v1/auth/token`` in the handshake (``io(url, {auth: {token}})``); its
role decides the rooms it is put in and may join. Events come from MQTT (the
bridges' read-only login), through :mod:`bridges.mqtt_wakeup` until the shared
subscriber library in ``clients/`` replaces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
import uvicorn
from paho.mqtt.client import MQTTMessage

from contract.link import MqttFeed
from order_service.accounts.broker_logins import MissingServiceSecret, bridge_address
from order_service.accounts.users import token_digest
from order_service.config import Settings, load_settings
from order_service.orders.access import agent_id_of
from order_service.store.db import db, init_db
from order_service.store.models import Token, User, utcnow

logger = logging.getLogger(__name__)

ADMIN, DELIVERY = "admin", "delivery"
_STATUS_TOPIC = re.compile(r"^orders/([^/]+)/status$")


def agent_room(agent_id: str) -> str:
    return f"{DELIVERY}:{agent_id}"


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str
    agent_id: str | None = None

    def may_join(self, room: str) -> bool:
        """Admins may watch every room; an agent only ``delivery`` and its own room."""
        if self.role == "admin":
            return room in (ADMIN, DELIVERY) or room.startswith(f"{DELIVERY}:")
        if self.role == "agent" and self.agent_id:
            return room in (DELIVERY, agent_room(self.agent_id))
        return False

    def default_rooms(self) -> list[str]:
        if self.role == "admin":
            return [ADMIN]
        if self.role == "agent" and self.agent_id:
            return [DELIVERY, agent_room(self.agent_id)]
        return []


def identify(token: str) -> Identity | None:
    """The user behind a REST bearer token, as the API checks it (None if invalid or expired)."""
    with db.connection_context():
        row = Token.select(Token, User).join(User).where(Token.token_hash == token_digest(token)).first()
        if row is None or row.expires_at <= utcnow() or not row.user.active:
            return None
        agent_id = agent_id_of(row.user) if row.user.role == "agent" else None
        return Identity(row.user.id, row.user.role, agent_id)


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
    if topic == "orders/new" and event.get("event") == "order.created":
        return [("order:new", [ADMIN], seed_payload(event))]
    if not _STATUS_TOPIC.match(topic) or "order" not in event:
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
        self.limit = limit
        self._new: OrderedDict[str, int] = OrderedDict()  # order id -> version, from orders/new
        self._status: OrderedDict[str, int] = OrderedDict()  # from orders/<id>/status

    def emits(
        self, topic: str, payload: bytes, *, retained: bool, first_session: bool
    ) -> list[tuple[str, list[str], dict]]:
        status = _STATUS_TOPIC.match(topic)
        if not payload:  # a finished order's retained state was cleared: forget the order
            if status:
                self._new.pop(status.group(1), None)
                self._status.pop(status.group(1), None)
            return []
        event = json.loads(payload)
        order = event.get("order") if isinstance(event, dict) else None
        if not isinstance(order, dict) or not (status or topic == "orders/new"):
            return []  # worklists and presence: not part of the seed's events
        order_id, version = str(order["id"]), int(order["version"])
        held = self._status if status else self._new
        known = order_id in self._new or order_id in self._status
        if version <= held.get(order_id, 0):
            return []  # a duplicate, or older than what the clients already have
        self._hold(held, order_id, version)
        if retained and first_session:
            return []  # current state at start-up: clients read it over REST
        emits = route(topic, event)
        if retained and status and not known:
            # Created while the bridge was away: its orders/new message was missed (or replaced).
            self._hold(self._new, order_id, version)
            emits = [("order:new", [ADMIN], seed_payload(event)), *emits]
        return emits

    def _hold(self, held: OrderedDict[str, int], order_id: str, version: int) -> None:
        held[order_id] = version
        held.move_to_end(order_id)
        if len(held) > self.limit:
            held.popitem(last=False)


class SocketBridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        origins = settings.socketio_cors_origins.strip()
        cors = "*" if origins == "*" else [o.strip() for o in origins.split(",") if o.strip()]
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=cors)
        self.app = socketio.ASGIApp(self.sio, other_asgi_app=self._http)
        self.feed: MqttFeed | None = None
        self.gate = Gate()
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
        who = await asyncio.to_thread(identify, token)
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
        """Disconnect sockets whose token expired or was revoked (logout, deactivation)."""
        while True:
            await asyncio.sleep(self.settings.socketio_recheck_seconds)
            for sid, token in list(self._tokens.items()):
                if await asyncio.to_thread(identify, token) is None:
                    logger.info("socket %s: token no longer valid; disconnecting", sid)
                    self._tokens.pop(sid, None)
                    await self.sio.disconnect(sid)

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

        client_id = f"orderbus-socketio-{os.getpid()}"
        self.feed = MqttFeed(bridge_address(self.settings), client_id, on_message)
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
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s socketio %(levelname)s %(message)s")
    init_db(settings.database_url, settings.sqlite_synchronous)
    try:
        bridge = SocketBridge(settings)
        asyncio.run(bridge.serve())
    except MissingServiceSecret as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
