"""amqtt plugins that enforce Mosquitto's password file and ACL file (formats: :mod:`broker.credfiles`).

How they hook amqtt 0.12.1 (``amqtt/broker.py``):

- ``authenticate(session=...)`` of every auth plugin runs once per CONNECT, after amqtt has
  built the session (client id, username, password, will) and before CONNACK; all must say
  True, else the client gets CONNACK 5 (not authorised) and is disconnected. Ours then
  replaces the session's client id with the username, as Mosquitto does with
  ``use_username_as_clientid true`` (mosquitto.conf sets it on both listeners): a login
  can only ever reach its own session, so no client can take over or wipe another's.
- ``topic_filtering(session=, topic=, action=)`` of every topic plugin runs with
  ``subscribe`` for each filter of a SUBSCRIBE (False: SUBACK 0x80), ``publish`` for each
  PUBLISH received (False: acknowledged, then dropped) and ``receive`` for each subscriber of
  a *live* message. amqtt sends retained messages (on SUBSCRIBE, and on CONNECT for every
  filter *any* client holds) and a persistent session's offline queue without asking any
  plugin, so the topic plugins also gate each connection's ``mqtt_publish``: nothing reaches a
  client that may not read its topic, whatever amqtt's routing decides.
- ``on_broker_client_connected`` installs that gate. amqtt schedules the event before it
  starts the client's handler and replays anything, so the gate is in place first. It also
  drops a will whose topic the client may not write (Mosquitto accepts such a CONNECT too
  and never publishes that will).

Reloading (:mod:`broker.credstore`): both files are stat'ed at every CONNECT and every
``CHECK_INTERVAL`` seconds on the broker's loop, and re-read when their inode, size or mtime
changes. A missing file denies everyone (logged once) until it appears; a malformed ACL keeps
the last good one (logged with its line). When the password entries change, connected clients
whose user is gone or whose hash changed are disconnected at once, without their last will,
and nothing more is queued for a removed user's offline persistent session.
Mosquitto 2.0.11 behaves the same on SIGHUP (checked: removed and rotated users are
disconnected, their will is not published, others stay connected), except that it re-reads
only on SIGHUP.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import OutgoingApplicationMessage, Session

from broker.credfiles import READ, WRITE, filter_covered, topic_matches
from broker.credstore import CredentialFiles, broker_of
from broker.framing import shown

logger = logging.getLogger(__name__)


@dataclass
class FilesConfig:
    """The plugins' configuration: where the password and ACL files are."""

    password_file: str
    acl_file: str


# --- authentication -----------------------------------------------------------------------------


class PasswordFileAuthPlugin(BaseAuthPlugin):
    """CONNECT needs a username in the password file and its secret; revocation disconnects."""

    class Config(FilesConfig):
        """amqtt builds the plugin's configuration from its nested ``Config`` dataclass."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.files = CredentialFiles.for_broker(context, self.config.password_file, self.config.acl_file)
        self.files.on_users_changed.append(self._disconnect_revoked)
        # client id -> (username, hash) its connection was accepted with, and that session
        self._granted: dict[str, tuple[str, str, Session]] = {}
        self._kicks: set[asyncio.Task[None]] = set()

    async def authenticate(self, *, session: Session) -> bool:
        self.files.refresh()
        client_id, username = session.client_id or "", session.username
        if not username:
            logger.info("refused MQTT client %r: no username", shown(client_id))
            return False
        password = session.password
        if isinstance(password, bytes | bytearray):
            password = password.decode("utf-8", "replace")
        encoded = await self.files.check(username, password or "")
        if encoded is None:
            known = "wrong secret" if username in self.files.users else "unknown user"
            logger.info("refused MQTT client %r, user %r: %s", shown(client_id), shown(username), known)
            return False
        # The client id is the login's: whatever id a client sends, it gets its username's
        # session and connection, never another login's (Mosquitto: use_username_as_clientid).
        session.client_id = username
        self._granted[username] = (username, encoded, session)
        return True

    def _disconnect_revoked(self) -> None:
        handlers = broker_of(self.context).sessions  # client id -> (Session, handler)
        for client_id, (_, _, session) in list(self._granted.items()):
            state = session.transitions.state
            if state == "disconnected":  # it must authenticate again anyway
                del self._granted[client_id]
            elif state == "connected" and (entry := handlers.get(client_id)) and entry[0] is session:
                self._disconnect_if_revoked(client_id, session, entry[1])
            # "new": between authenticate() and connected; on_broker_client_connected checks it

    def _disconnect_if_revoked(self, client_id: str, session: Session, handler: Any) -> None:
        granted = self._granted.get(client_id)
        if granted is None or granted[2] is not session:
            return
        username, encoded, _ = granted
        if self.files.users.get(username) == encoded:
            return
        reason = "rotated" if username in self.files.users else "removed"
        logger.warning("disconnecting MQTT client %r: user %r was %s", client_id, username, reason)
        del self._granted[client_id]
        task = asyncio.get_running_loop().create_task(_disconnect(session, handler))
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        # A change read between authenticate() and now found this session not yet connected.
        entry = broker_of(self.context).sessions.get(client_id)
        if entry is not None:
            self._disconnect_if_revoked(client_id, client_session, entry[1])

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Session) -> None:
        granted = self._granted.get(client_id)
        state = client_session.transitions.state
        if granted is not None and granted[2] is client_session and state == "disconnected":
            del self._granted[client_id]  # unless it already connected again

    async def on_broker_post_start(self) -> None:
        self.files.start_watching()

    async def on_broker_pre_shutdown(self) -> None:
        self.files.stop_watching()

    async def close(self) -> None:
        self.files.stop_watching()


async def _disconnect(session: Session, handler: Any) -> None:
    session.will_flag = False  # as Mosquitto: a revoked client's last will is not published
    try:
        await handler.handle_connection_closed()  # amqtt's own take-over path ends the client loop
        if handler.writer is not None:  # and should that loop not run yet, the socket still closes
            await handler.writer.close()
    except Exception as exc:  # the connection may be going away by itself meanwhile
        logger.debug("disconnecting MQTT client %r: %r", session.client_id, exc)


class OpenAuthPlugin(BaseAuthPlugin):
    """Dev/conformance mode: every CONNECT is accepted, with or without credentials.

    Unlike amqtt's AnonymousAuthPlugin it leaves sessions non-anonymous, so persistent
    sessions keep their subscriptions and offline queue, as conformance suites expect.
    """

    async def authenticate(self, *, session: Session) -> bool:
        return True


# --- topics ---------------------------------------------------------------------------------------


class Rules(Protocol):
    def allowed(self, username: str | None, client_id: str, access: str, topic: str) -> bool: ...

    def may_subscribe(self, username: str | None, client_id: str, filter_: str) -> bool: ...


@dataclass(frozen=True)
class OpenRules:
    """Dev/conformance mode: everything is allowed except the deny topics (filters allowed)."""

    deny: tuple[str, ...] = field(default_factory=tuple)

    def allowed(self, username: str | None, client_id: str, access: str, topic: str) -> bool:
        return not any(topic_matches(d, topic) for d in self.deny)

    def may_subscribe(self, username: str | None, client_id: str, filter_: str) -> bool:
        # Refused when every topic of the filter is denied; otherwise delivery filters the rest.
        return not any(filter_covered(filter_, d) for d in self.deny)


class RulesTopicPlugin(BaseTopicPlugin):
    """Answers amqtt's three actions from :meth:`rules` and gates every delivery."""

    def rules(self) -> Rules:
        raise NotImplementedError

    def current(self, session: Session) -> bool:
        """Whether the session's user still exists (False: nothing in or out for it)."""
        return True

    def rules_state(self) -> tuple[object, ...]:
        """The objects :meth:`may_read` answers from besides the session and the topic, each
        replaced (never changed in place) when what it says changes: the broker remembers
        answers while they stay the same objects."""
        return (self.rules(),)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or not topic or not self.current(session):
            return False
        username, client_id = session.username, session.client_id or ""
        if action == Action.SUBSCRIBE:
            return self.rules().may_subscribe(username, client_id, topic)
        if action == Action.PUBLISH:
            return self.rules().allowed(username, client_id, WRITE, topic)
        if action == Action.RECEIVE:
            return self.rules().allowed(username, client_id, READ, topic)
        return False

    def may_read(self, session: Session, topic: str) -> bool:
        return self.current(session) and self.rules().allowed(
            session.username, session.client_id or "", READ, topic
        )

    def may_write(self, session: Session, topic: str) -> bool:
        """topic_filtering's answer for Action.PUBLISH, without a coroutine."""
        return (
            bool(topic)
            and self.current(session)
            and self.rules().allowed(session.username, session.client_id or "", WRITE, topic)
        )

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        # Synchronous up to here on purpose: this runs before amqtt replays anything.
        if client_session.will_flag and not self.rules().allowed(
            client_session.username, client_id, WRITE, client_session.will_topic or ""
        ):
            logger.info("MQTT client %r may not write its will topic; the will is dropped", shown(client_id))
            client_session.will_flag = False  # Mosquitto also connects it and drops the will
        entry = broker_of(self.context).sessions.get(client_id)
        if entry is not None and entry[0] is client_session:
            _gate_deliveries(entry[1], client_session, self.may_read)


def _gate_deliveries(handler: Any, session: Session, may_read: Callable[[Session, str], bool]) -> None:
    """Wrap this connection's ``mqtt_publish`` (amqtt's only way out to a client) in a read check."""
    send = handler.mqtt_publish
    if getattr(send, "acl_gate", False):
        return

    async def gated(topic: str, data: bytes | bytearray, qos: int | None, *args: Any, **kwargs: Any) -> Any:
        if may_read(session, topic):
            return await send(topic, data, qos, *args, **kwargs)
        logger.debug("not delivering %s to MQTT client %r: no read access", topic, session.client_id)
        retain = bool(args[0] if args else kwargs.get("retain", False))
        return OutgoingApplicationMessage(None, topic, qos, data, retain)  # never sent

    gated.acl_gate = True  # type: ignore[attr-defined]
    handler.mqtt_publish = gated


class AclFileTopicPlugin(RulesTopicPlugin):
    """PUBLISH needs ``write``, SUBSCRIBE :meth:`Acl.may_subscribe`, every delivery ``read``."""

    class Config(FilesConfig):
        """amqtt builds the plugin's configuration from its nested ``Config`` dataclass."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.files = CredentialFiles.for_broker(context, self.config.password_file, self.config.acl_file)

    def rules(self) -> Rules:
        return self.files.acl

    def current(self, session: Session) -> bool:
        # A removed user's persistent session would otherwise queue messages for ever.
        return session.username in self.files.users

    def rules_state(self) -> tuple[object, ...]:
        return (self.files.acl, self.files.users)  # both replaced by each reload (broker/credstore.py)

    async def on_broker_post_start(self) -> None:
        self.files.start_watching()

    async def close(self) -> None:
        self.files.stop_watching()


class DenyTopicsPlugin(RulesTopicPlugin):
    """Dev/conformance mode: every topic readable and writable except ``deny_topics``."""

    @dataclass
    class Config:
        deny_topics: list[str] = field(default_factory=list)

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._rules = OpenRules(tuple(self.config.deny_topics))

    def rules(self) -> Rules:
        return self._rules


# --- configuration ------------------------------------------------------------------------------------


def plugin_config(
    *,
    password_file: str | os.PathLike[str] | None = None,
    acl_file: str | os.PathLike[str] | None = None,
    anonymous: bool = False,
    deny_topics: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """amqtt's ``plugins`` section: the two files, or open (dev/conformance) mode.

    With neither file the broker is open, as with ``anonymous=True``: tests build
    ``EmbeddedBroker()`` that way. Giving ``plugins`` replaces amqtt's default set, which is
    also how the $SYS and logger plugins stay off.
    """
    deny = [str(t) for t in deny_topics]
    if any(not t for t in deny):
        raise ValueError("a deny topic cannot be empty")
    if anonymous or (password_file is None and acl_file is None):
        if password_file is not None or acl_file is not None:
            raise ValueError("anonymous mode reads no password or ACL file; give one or the other")
        return {f"{__name__}.OpenAuthPlugin": {}, f"{__name__}.DenyTopicsPlugin": {"deny_topics": deny}}
    if password_file is None or acl_file is None:
        raise ValueError("give both a password file and an ACL file")
    if deny:
        raise ValueError("deny topics apply only to anonymous (conformance) mode; use the ACL file")
    files = {"password_file": str(password_file), "acl_file": str(acl_file)}
    return {f"{__name__}.PasswordFileAuthPlugin": files, f"{__name__}.AclFileTopicPlugin": dict(files)}
