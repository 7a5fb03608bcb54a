"""amqtt on its own thread and event loop, so synchronous code (tests, the CLI) can own it.

amqtt's ``Broker`` must be constructed inside a running event loop, and it keeps
everything (sessions, subscriptions, retained messages) in memory: a restart starts
empty. That is by design here; the relay rebuilds the retained state on reconnect.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import threading
from contextlib import ExitStack, suppress
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

logger = logging.getLogger(__name__)

PORT_ENV = "ORDERBUS_BROKER_PORT"
WS_PORT_ENV = "ORDERBUS_BROKER_WS_PORT"
# mqtt.js connects to ws://host:port/mqtt. amqtt's WebSocket listener ignores the
# request path, so /mqtt (like any path) is served; the constant documents the contract.
WS_PATH = "/mqtt"


class BrokerStartError(Exception):
    """The broker could not start; ``str(exc)`` is a one-line explanation for a human."""


class _DropStartupTraceback(logging.Filter):
    """amqtt logs a full traceback when a listener cannot bind; we raise a one-line
    BrokerStartError for the same failure instead, so that record is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


def quiet_amqtt_logging() -> None:
    """amqtt, its state machine library and websockets log every connection at INFO."""
    for name in ("transitions", "amqtt", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    amqtt_broker = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _DropStartupTraceback) for f in amqtt_broker.filters):
        amqtt_broker.addFilter(_DropStartupTraceback())


def anonymous_plugins() -> dict[str, dict[str, Any]]:
    """The plugins section: for now, anyone may connect, without credentials.

    TEMPORARY SEAM: the next issue (auth and topic ACL) replaces this function with
    plugins that read the service-written password and ACL files. Giving ``plugins``
    replaces amqtt's default set, which is how the $SYS plugin (and the event/packet
    logger plugins) stay off. Caveat: AnonymousAuthPlugin marks every session
    anonymous, and amqtt never queues messages for an offline anonymous session.
    """
    return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


def _bind_address(host: str, port: int) -> str:
    # amqtt parses "addr:port"; an IPv6 literal needs brackets to keep its colons apart.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_config(
    host: str, port: int, ws_port: int, plugins: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """amqtt configuration: TCP listener ``default`` on host:port, WebSocket on host:ws_port."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": _bind_address(host, port)},
            # Without its own bind a listener inherits the default's (the TCP port) and fails.
            "ws": {"type": "ws", "bind": _bind_address(host, ws_port)},
        },
        "plugins": anonymous_plugins() if plugins is None else plugins,
    }


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    # Same option asyncio uses for servers: a port in TIME_WAIT after our own stop()
    # must count as free, or a restart on the same port would be refused.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def pick_free_port(host: str, avoid: int = 0) -> int:
    """A currently free ephemeral port (amqtt needs a number; it cannot report port 0's choice)."""
    while True:
        with _bind(host, 0) as sock:
            port = int(sock.getsockname()[1])
        if port != avoid:
            return port


def check_ports_free(host: str, port: int, ws_port: int) -> None:
    """Raise BrokerStartError naming the port and its variable if one cannot be bound."""
    if port == ws_port:
        raise BrokerStartError(
            f"{PORT_ENV} and {WS_PORT_ENV} are both {port}; the TCP and WebSocket "
            f"listeners need different ports"
        )
    with ExitStack() as held:  # hold the first while probing the second
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


class EmbeddedBroker:
    """An amqtt broker with a TCP and a WebSocket listener, run on a dedicated thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ws_port: int = 0) -> None:
        self.host = host
        self.port = port or pick_free_port(host, avoid=ws_port)
        self.ws_port = ws_port or pick_free_port(host, avoid=self.port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10) -> None:
        """Start serving; returns once both listeners accept connections."""
        if self._thread is not None:
            raise RuntimeError("broker already started")
        quiet_amqtt_logging()
        # Checked up front for a clear message naming the variable; amqtt's own bind
        # failure (if another process wins the race) is translated below as well.
        check_ports_free(self.host, self.port, self.ws_port)
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run_thread, args=(ready,), name=f"mqtt-broker-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            with suppress(TimeoutError):  # the daemon thread cannot outlive the process
                self.stop(timeout)
            raise BrokerStartError(f"MQTT broker did not start within {timeout} s")
        if self._startup_error is not None:
            error = self._startup_error
            self._thread.join(timeout)
            self._thread = None
            if isinstance(error, BrokerStartError):
                raise error
            raise BrokerStartError(f"MQTT broker failed to start: {error}") from error
        logger.debug("broker started on %s:%s and ws port %s", self.host, self.port, self.ws_port)

    def stop(self, timeout: float = 10) -> None:
        """Disconnect every client, close the listeners and join the thread. Idempotent."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"MQTT broker did not stop within {timeout} s")
        self._thread = None

    def run_forever(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly (main thread only)."""
        stop_signal = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            logger.info("received %s, shutting down", signal.Signals(signum).name)
            stop_signal.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            logger.info(
                "MQTT broker listening on mqtt://%s:%d and ws://%s:%d%s",
                _url_host(self.host), self.port, _url_host(self.host), self.ws_port, WS_PATH,
            )
            # The main thread only waits; the signal handler runs between waits.
            while not stop_signal.wait(0.5):
                if not self.running:
                    raise RuntimeError("MQTT broker thread stopped unexpectedly")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_thread(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # anything escaping would be lost on this thread
            logger.exception("MQTT broker thread failed")
            if not ready.is_set():
                self._startup_error = exc
        finally:
            self._loop = None
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        broker = Broker(build_config(self.host, self.port, self.ws_port))
        try:
            await broker.start()
        except BrokerError as exc:
            await _close_listeners(broker)
            self._startup_error = self._explain(exc)
            return
        ready.set()
        await self._stop_requested.wait()
        await broker.shutdown()

    def _explain(self, exc: BrokerError) -> BrokerStartError:
        try:  # usually another process took one of our ports after the early check
            check_ports_free(self.host, self.port, self.ws_port)
        except BrokerStartError as explained:
            return explained
        cause = exc.__cause__ or exc
        return BrokerStartError(f"MQTT broker failed to start: {cause}")


async def _close_listeners(broker: Broker) -> None:
    # amqtt leaves the listeners it did open (the TCP one, when the WebSocket one
    # fails) listening after a failed start; close them or the port stays taken.
    for server in getattr(broker, "_servers", {}).values():
        try:
            await server.close_instance()
        except Exception:  # best effort: we are already reporting the real failure
            logger.debug("closing a listener after a failed start", exc_info=True)
