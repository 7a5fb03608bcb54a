"""The publish channel: how the relay hands its messages to the embedded broker of another
process without MQTT.

Over MQTT each message costs the relay a PUBLISH through paho's network thread and a wait
for its PUBACK, and the broker a packet parsed and a PUBACK written: about 0.45 ms of CPU
per new order in the two processes (docs/benchmarks/findings.md). Over this channel a
batch is one frame and one answer. The broker routes each message as it routes a QoS 1
PUBLISH of the service (``HardenedBroker.publish_local``, also used when the broker runs in
the relay's own process) and answers once every message of the frame is queued for its
subscribers and, retained, stored: what a PUBACK promises.

The broker (``python -m broker``) listens on a free port of 127.0.0.1 and writes
``<port> <secret>`` to the file ``publish`` beside its password file (mode 0600), before
its MQTT listeners accept anyone: a relay that reached the broker over MQTT reads this
start's file. The file goes when the broker stops cleanly; one left by a killed broker
names a closed port or a listener that does not answer the greeting, and the relay then
publishes over MQTT.

Wire format, all integers big-endian:

- client, once: ``GREETING`` + the secret (32 hex digits) + ``\\n``; broker: ``WELCOME``.
  A wrong secret, or none within :data:`GREETING_SECONDS`, closes the connection.
- client, per frame: a u32 body length (at most :data:`MAX_FRAME_BYTES`), then the body:
  a u32 message count, then per message a u8 retain flag, a u16 topic length, the topic
  (UTF-8), a u32 payload length and the payload.
- broker, per frame: a u32, how many messages it took (all of them).

A frame that breaks the format closes the connection; the relay then sends again what was
not answered, as after a lost MQTT connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from broker.credfiles import write_atomically

logger = logging.getLogger(__name__)

FILE_NAME = "publish"  # beside the broker's password file
GREETING = b"orderbus-publish/1 "
WELCOME = b"orderbus-publish/1 ok\n"
SECRET_HEX = 32
GREETING_SECONDS = 5.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
FRAME_BYTES = 1024 * 1024  # the client starts a new frame past this many bytes
MAX_CONNECTIONS = 8

_U32 = struct.Struct("!I")
_HEAD = struct.Struct("!BH")  # retain, topic length

Message = tuple[str, bytes, bool]


def channel_file(password_file: str | os.PathLike[str]) -> Path:
    """Where the broker whose password file this is writes its channel's port and secret."""
    return Path(password_file).parent / FILE_NAME


def encode(messages: list[Message]) -> bytes:
    """One frame: its length, then the body."""
    parts = [_U32.pack(len(messages))]
    for topic, payload, retain in messages:
        raw = topic.encode()
        parts += [_HEAD.pack(1 if retain else 0, len(raw)), raw, _U32.pack(len(payload)), payload]
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def decode(body: bytes) -> list[Message]:
    """A frame's messages; ValueError when the body breaks the format."""
    view = memoryview(body)
    if len(view) < 4:
        raise ValueError("frame shorter than its count")
    (count,) = _U32.unpack_from(view)
    at, messages = 4, []
    for _ in range(count):
        if at + 3 > len(view):
            raise ValueError("frame ends inside a message's header")
        retain, topic_length = _HEAD.unpack_from(view, at)
        at += 3
        topic = bytes(view[at : at + topic_length]).decode()  # UnicodeDecodeError is a ValueError
        at += topic_length
        if at + 4 > len(view):
            raise ValueError("frame ends before a payload's length")
        (length,) = _U32.unpack_from(view, at)
        at += 4
        if at + length > len(view) or retain > 1 or not topic:
            raise ValueError("a message runs past the frame, or has a bad flag or an empty topic")
        messages.append((topic, bytes(view[at : at + length]), bool(retain)))
        at += length
    if at != len(view):
        raise ValueError("bytes after the last message")
    return messages


class ChannelServer:
    """The broker's end, on its event loop: ``publish`` routes a frame's messages and
    returns how many it took (``HardenedBroker.publish_local``)."""

    def __init__(self, publish: Callable[[list[Message]], Awaitable[int]], path: Path) -> None:
        self.publish = publish
        self.path = path
        self.secret = secrets.token_hex(SECRET_HEX // 2).encode()
        self.frames = 0  # answered, since the start (tests, logs)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()

    async def start(self) -> None:
        """Listen and write the file; frames are answered once :meth:`serve` is called."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        write_atomically(self.path, f"{port} {self.secret.decode()}\n", 0o600)
        logger.info("publish channel on 127.0.0.1:%d (%s)", port, self.path)

    def serve(self) -> None:
        self._open.set()

    async def close(self) -> None:
        """Remove the file (if still this start's), stop listening, drop the clients."""
        with contextlib.suppress(OSError):
            if self.secret in self.path.read_bytes():
                self.path.unlink()
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._clients.add(writer)
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            greeting = await asyncio.wait_for(
                reader.readexactly(len(GREETING) + SECRET_HEX + 1), GREETING_SECONDS
            )
            if not hmac.compare_digest(greeting, GREETING + self.secret + b"\n"):
                logger.warning("publish channel: a connection without the secret; closed")
                return
            await self._open.wait()
            writer.write(WELCOME)
            logger.info("publish channel: relay connected")
            while True:
                (length,) = _U32.unpack(await reader.readexactly(4))
                if length > MAX_FRAME_BYTES:
                    logger.warning("publish channel: a frame of %d bytes, over the limit; closed", length)
                    return
                try:
                    messages = decode(await reader.readexactly(length))
                except ValueError as exc:
                    logger.warning("publish channel: a malformed frame (%s); closed", exc)
                    return
                taken = await self.publish(messages)
                self.frames += 1
                writer.write(_U32.pack(taken))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return  # the relay went away (or never greeted): it sends again what was not answered
        finally:
            self._clients.discard(writer)
            writer.transport.abort()


class ChannelUnavailable(Exception):
    """No channel to this broker (no file, a stale one, a listener that is not the broker)."""


class PublishChannel:
    """The relay's end: blocking, one frame at a time; a ``LocalPublish`` for ``MqttLink``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def open(cls, path: Path, timeout: float = 5.0) -> PublishChannel:
        """Connect and greet with the secret of ``path``; ChannelUnavailable if that fails."""
        try:
            port_text, secret = path.read_bytes().split()
            port = int(port_text)
        except FileNotFoundError:
            raise ChannelUnavailable(f"no {path}") from None
        except (OSError, ValueError) as exc:
            raise ChannelUnavailable(f"{path} unreadable: {exc}") from None
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout)
        except OSError as exc:
            raise ChannelUnavailable(f"127.0.0.1:{port} from {path}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(GREETING + secret + b"\n")
            answer = _receive(sock, len(WELCOME))
        except OSError as exc:
            sock.close()
            raise ChannelUnavailable(f"127.0.0.1:{port} did not answer the greeting: {exc}") from None
        if answer != WELCOME:
            sock.close()
            raise ChannelUnavailable(f"127.0.0.1:{port} is not this broker's publish channel")
        return cls(sock)

    def __call__(self, messages: list[Message], timeout: float) -> int:
        """Send ``messages`` in frames of about :data:`FRAME_BYTES`; how many the broker took.
        OSError (a timeout included) when the broker does not answer."""
        self.sock.settimeout(timeout)
        done = 0
        while done < len(messages):
            end, size = done, 0
            while end < len(messages) and (end == done or size < FRAME_BYTES):
                size += len(messages[end][0]) + len(messages[end][1]) + 7
                end += 1
            self.sock.sendall(encode(messages[done:end]))
            (taken,) = _U32.unpack(_receive(self.sock, 4))
            if taken != end - done:  # the broker takes a whole frame or closes the channel
                raise ConnectionResetError(f"the broker took {taken} of a frame of {end - done}")
            done = end
        return done

    def close(self) -> None:
        self.sock.close()


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the broker closed the publish channel")
        data += chunk
    return data
