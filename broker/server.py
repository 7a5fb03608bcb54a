"""amqtt on its own thread and event loop, so synchronous code (tests, the CLI) can own it.

amqtt's ``Broker`` must be built inside a running event loop, and it keeps everything
(sessions, subscriptions, retained messages) in memory: a restart starts empty. That
is accepted: the relay rebuilds the retained state whenever it reconnects.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from broker.channel import ChannelServer
from broker.hardened import (
    DEFAULT_MAX_INFLIGHT_MESSAGES,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_MESSAGES,
    HardenedBroker,
)
from broker.plugins import plugin_config

logger = logging.getLogger(__name__)

PORT_ENV = "ORDERBUS_BROKER_PORT"
WS_PORT_ENV = "ORDERBUS_BROKER_WS_PORT"
# mqtt.js connects to ws://host:port/mqtt. amqtt's WebSocket listener ignores the
# request path, so /mqtt (like any path) is served; the constant records the contract.
WS_PATH = "/mqtt"
SHUTDOWN_TIMEOUT = 3.0  # seconds for each shutdown phase; stop(timeout) bounds the whole
SESSION_EXPIRY_SECONDS = 14 * 24 * 3600  # as persistent_client_expiration 14d in mosquitto.conf


class BrokerStopped(Exception):
    """The broker is not running (or not answering) for :meth:`EmbeddedBroker.publish_local`."""


class BrokerStartError(Exception):
    """The broker could not start; ``str(exc)`` is a one-line explanation for a human."""


class _DropStartupTraceback(logging.Filter):
    # amqtt logs a traceback when a listener cannot bind; we raise a one-line
    # BrokerStartError for the same failure, so that record is only noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


def quiet_amqtt_logging() -> None:
    """amqtt, its state machine library and websockets log every connection at INFO."""
    for name in ("transitions", "amqtt", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    amqtt_broker = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _DropStartupTraceback) for f in amqtt_broker.filters):
        amqtt_broker.addFilter(_DropStartupTraceback())


def _address(host: str, port: int) -> str:
    # amqtt parses "addr:port" and URLs want the same: an IPv6 literal needs brackets.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_config(
    host: str, port: int, ws_port: int, plugins: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """amqtt configuration: TCP listener ``default`` on host:port, WebSocket on host:ws_port."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": _address(host, port)},
            # Without its own bind a listener inherits the default's (the TCP port) and fails.
            "ws": {"type": "ws", "bind": _address(host, ws_port)},
        },
        # Giving ``plugins`` replaces amqtt's default set (which is how $SYS stays off).
        "plugins": plugin_config() if plugins is None else plugins,
        # A persistent session whose client stays away this long is dropped, as
        # persistent_client_expiration in mosquitto.conf: no session is kept for ever.
        "session_expiry_interval": SESSION_EXPIRY_SECONDS,
    }


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # asyncio sets this on servers too: a port in TIME_WAIT after our own stop() is free
    # for a restart, while a port another process listens on is still refused.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


#: Ports :func:`pick_free_port` (and the test harness) handed out in this process, newest
#: last: a port is free only until its program binds it, so it is never handed out twice.
HANDED_OUT: deque[int] = deque(maxlen=4096)


def pick_free_port(host: str, avoid: int = 0) -> int:
    """A currently free ephemeral port: amqtt needs a number and cannot report port 0's choice."""
    while True:
        try:
            with _bind(host, 0) as sock:
                port = int(sock.getsockname()[1])
        except OSError as exc:  # e.g. an unknown host name or an address not on this machine
            raise BrokerStartError(f"cannot listen on {host}: {exc.strerror or exc}") from exc
        if port != avoid and port not in HANDED_OUT:
            HANDED_OUT.append(port)
            return port


def check_ports_free(host: str, port: int, ws_port: int) -> None:
    """Raise BrokerStartError, naming the port and its variable, if one cannot be bound."""
    if port == ws_port:
        raise BrokerStartError(f"{PORT_ENV} and {WS_PORT_ENV} are both {port}; use two ports")
    with ExitStack() as held:  # hold the first while trying the second
        for number, env in ((port, PORT_ENV), (ws_port, WS_PORT_ENV)):
            try:
                held.enter_context(_bind(host, number))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BrokerStartError(
                        f"port {number} on {host} ({env}) is already in use — is another MQTT "
                        f"broker running? Pick another port, e.g. {env}={number + 1}"
                    ) from exc
                raise BrokerStartError(
                    f"cannot listen on {host}:{number} ({env}): {exc.strerror or exc}"
                ) from exc


async def _disconnect_everyone(broker: HardenedBroker) -> None:
    """Close the listeners and drop every client before amqtt's shutdown() runs.

    amqtt 0.12.1's shutdown() cancels each client's reader task and waits for it to
    end. Python 3.11's asyncio.wait_for swallows that cancellation when a packet
    arrives in the same loop iteration (e.g. a SUBSCRIBE right after CONNACK), so
    shutdown() then waits until the client goes away by itself: stop() hung. Cut off
    first, every reader ends on end-of-stream and amqtt has nothing left to cancel.
    """
    for server in getattr(broker, "_servers", {}).values():  # amqtt's own listener list
        server.instance.close()  # stop accepting: reconnecting clients must not race us
    for transport in list(broker.client_transports):
        transport.abort()
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_TIMEOUT
    while broker.client_transports and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # amqtt's per-connection tasks notice and clean up


class EmbeddedBroker:
    """A hardened amqtt broker (broker/hardened.py) with a TCP and a WebSocket listener,
    run on a dedicated thread.

    Clients authenticate against ``password_file`` and are authorised by ``acl_file`` (both
    in Mosquitto's formats, re-read when they change; see broker.plugins). ``anonymous=True``,
    or giving neither file, is the dev/conformance mode: anyone connects and every topic is
    open except ``deny_topics``. Bad combinations raise ValueError. ``plugins`` replaces
    amqtt's whole plugins section instead (tests of amqtt itself).
    ``max_queued_messages`` and ``max_queued_bytes`` bound each client's queue (as in
    mosquitto.conf), ``max_inflight_messages`` its unacknowledged QoS 1/2 messages.
    With ``channel_file`` the broker also serves the relay's publish channel and writes its
    port and secret to that file (broker/channel.py).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        *,
        password_file: str | os.PathLike[str] | None = None,
        acl_file: str | os.PathLike[str] | None = None,
        anonymous: bool = False,
        deny_topics: Iterable[str] = (),
        plugins: dict[str, dict[str, Any]] | None = None,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_inflight_messages: int = DEFAULT_MAX_INFLIGHT_MESSAGES,
        channel_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if plugins is None:
            plugins = plugin_config(
                password_file=password_file, acl_file=acl_file, anonymous=anonymous, deny_topics=deny_topics
            )
        self.host = host
        self.port = port or pick_free_port(host, avoid=ws_port)
        self.ws_port = ws_port or pick_free_port(host, avoid=self.port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._plugins = plugins
        self._limits = {
            "max_queued_messages": max_queued_messages,
            "max_queued_bytes": max_queued_bytes,
            "max_inflight_messages": max_inflight_messages,
        }
        self._broker: HardenedBroker | None = None
        self._channel_file = Path(channel_file) if channel_file is not None else None
        self.channel: ChannelServer | None = None

    @property
    def dropped_messages(self) -> int:
        """Messages dropped because a client's queue was full, since the last start."""
        return self._broker.dropped_messages if self._broker is not None else 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10) -> None:
        """Serve on a new thread; returns once both listeners accept connections."""
        if self._thread is not None:
            raise RuntimeError("broker already started")
        quiet_amqtt_logging()
        # Checked first for a message naming the variable; should another process take
        # a port in between, amqtt's own failure is explained the same way.
        check_ports_free(self.host, self.port, self.ws_port)
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run_thread, args=(ready,), name=f"mqtt-broker-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            with suppress(TimeoutError):  # a daemon thread: it cannot keep the process alive
                self.stop(timeout)
            raise BrokerStartError(f"MQTT broker did not start within {timeout} s")
        if (error := self._startup_error) is not None:
            self._thread.join(timeout)
            self._thread = None
            if isinstance(error, BrokerStartError):
                raise error
            raise BrokerStartError(f"MQTT broker failed to start: {error}") from error

    def stop(self, timeout: float = 10) -> None:
        """Disconnect every client, close the listeners and join the thread. Idempotent."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None:
            with suppress(RuntimeError):  # the loop already closed: the thread is ending
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"MQTT broker did not stop within {timeout} s")
        self._thread = None

    def publish_local(self, messages: list[tuple[str, bytes, bool]], timeout: float = 10.0) -> int:
        """From another thread of this process: route ``messages`` (topic, payload, retained?)
        as QoS 1 publishes of the service (:meth:`HardenedBroker.publish_local`); returns
        how many were taken. Raises :class:`BrokerStopped` when the broker is not running
        or did not take them within ``timeout`` seconds."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not self.running:
            raise BrokerStopped("the broker is not running")
        try:
            future = asyncio.run_coroutine_threadsafe(broker.publish_local(messages), loop)
        except RuntimeError as exc:  # the loop closed in between
            raise BrokerStopped("the broker is not running") from exc
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            taken = f"{len(messages)} message(s) within {timeout} s"
            raise BrokerStopped(f"the broker did not take {taken}") from None

    def run_forever(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly (main thread only)."""
        stop_signal = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            logger.info("received %s, shutting down", signal.Signals(signum).name)
            stop_signal.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            tcp, ws = _address(self.host, self.port), _address(self.host, self.ws_port)
            logger.info("MQTT broker listening on mqtt://%s and ws://%s%s", tcp, ws, WS_PATH)
            # The main thread only waits, so the signal handler runs promptly.
            while not stop_signal.wait(0.5):
                if not self.running:
                    raise RuntimeError("MQTT broker thread stopped unexpectedly")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_thread(self, ready: threading.Event) -> None:
        try:
            # asyncio.run also cancels whatever tasks amqtt leaves behind at shutdown.
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # nobody else would see it on this thread
            logger.exception("MQTT broker thread failed")
            if not ready.is_set():
                self._startup_error = exc
        finally:
            self._loop = None
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        broker = HardenedBroker(
            build_config(self.host, self.port, self.ws_port, self._plugins), **self._limits
        )
        self._broker = broker
        channel = None
        if self._channel_file is not None:  # its file is written before MQTT is served
            channel = self.channel = ChannelServer(broker.publish_local, self._channel_file)
            await channel.start()
        try:
            # Returns once both servers listen, so the kernel accepts connections from now.
            await broker.start()
        except BrokerError as exc:
            if channel is not None:
                await channel.close()
            self._startup_error = await self._explain_failed_start(broker, exc)
            return
        if channel is not None:
            channel.serve()
        ready.set()
        await self._stop_requested.wait()
        if channel is not None:
            await channel.close()
        await _disconnect_everyone(broker)
        try:
            await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT)
        except TimeoutError:  # listeners and clients are already closed; only tasks remain
            logger.warning("amqtt shutdown stalled; abandoning its remaining tasks")

    async def _explain_failed_start(self, broker: Broker, exc: BrokerError) -> BrokerStartError:
        # amqtt leaves the listeners it did open (the TCP one, when the WebSocket one
        # fails) listening after a failed start; close them or the port stays taken.
        for server in getattr(broker, "_servers", {}).values():
            with suppress(Exception):  # best effort: the real failure is reported below
                await server.close_instance()
        try:  # usually another process took one of our ports after the early check
            check_ports_free(self.host, self.port, self.ws_port)
        except BrokerStartError as explained:
            return explained
        return BrokerStartError(f"MQTT broker failed to start: {exc.__cause__ or exc}")
