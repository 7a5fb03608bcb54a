"""Every packet a client sends is framed and checked before amqtt decodes it.

amqtt 0.12.1 decodes straight from the socket and trusts what it reads: it reads past
the end of a packet, waits forever for a CONNECT that garbage announced, turns a topic
that is not UTF-8 into the text ``"b'...'"`` and delivers it, and skips a packet it
cannot decode and reads on from the middle of it. :class:`FramedReader` sits between
the socket and amqtt: it reads one whole packet (fixed header, then exactly its
remaining length, refused beyond ``max_packet_bytes`` before anything is buffered),
checks it against MQTT 3.1.1, and only then lets amqtt read it. A packet that breaks
the protocol raises :class:`ProtocolViolation`, which ends the connection
[MQTT-4.8.0-1]; amqtt's reader skips only its own MQTTError, so this is not one.
"""

from __future__ import annotations

import asyncio
import struct

from amqtt.adapters import ReaderAdapter

CONNECT, PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 6, 8, 10, 12, 14
# Packet types a client may send, with the fixed-header flags each must carry (None: PUBLISH's own).
CLIENT_PACKETS: dict[int, int | None] = {
    CONNECT: 0, PUBLISH: None, 4: 0, 5: 0, PUBREL: 2, 7: 0,
    SUBSCRIBE: 2, UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0,
}  # fmt: skip
FIXED_LENGTH = {4: 2, 5: 2, PUBREL: 2, 7: 2, PINGREQ: 0, DISCONNECT: 0}
_PUBACK_HEADER = b"\x40\x02"  # PUBACK, flags 0, two bytes long: what check_packet accepts


def shown(text: object, limit: int = 120) -> str:
    """A client's string (topic, client id, username) for a log line: cut to ``limit``
    characters, as one may be 65,535 bytes long and a line is written per refusal."""
    value = str(text)
    return value if len(value) <= limit else f"{value[:limit]}...({len(value)} characters)"


class ProtocolViolation(Exception):
    """The client broke MQTT 3.1.1; the connection must be closed."""


class _Body:
    """A cursor over one packet's body; reading past its end is a violation."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise ProtocolViolation("a field runs past the end of its packet")
        self.pos += count
        return self.data[self.pos - count : self.pos]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def text(self, what: str) -> str:
        raw = self.take(self.u16())
        try:
            value = raw.decode("utf-8")  # rejects surrogates (U+D800-DFFF) too [MQTT-1.5.3-1]
        except UnicodeDecodeError:
            raise ProtocolViolation(f"{what} is not valid UTF-8 [MQTT-1.5.3-1]") from None
        if "\x00" in value:
            raise ProtocolViolation(f"{what} contains U+0000 [MQTT-1.5.3-2]")
        return value

    def done(self) -> bool:
        return self.pos == len(self.data)


def _check_filter(value: str) -> None:
    levels = value.split("/")
    if not value or any(("#" in lv and (lv != "#" or i != len(levels) - 1)) for i, lv in enumerate(levels)):
        raise ProtocolViolation(f"invalid topic filter {value!r} [MQTT-4.7.1-2]")
    if any("+" in lv and lv != "+" for lv in levels):
        raise ProtocolViolation(f"invalid topic filter {value!r} [MQTT-4.7.1-3]")


def check_packet(kind: int, flags: int, body: bytes, *, first: bool) -> None:
    """Raise ProtocolViolation unless this packet is one a client may send here."""
    if first != (kind == CONNECT):
        raise ProtocolViolation("the first packet must be CONNECT, and only the first [MQTT-3.1.0-1/2]")
    if kind not in CLIENT_PACKETS:
        raise ProtocolViolation(f"packet type {kind} may not be sent by a client")
    expected = CLIENT_PACKETS[kind]
    if expected is not None and flags != expected:
        raise ProtocolViolation(f"packet type {kind} with reserved flags {flags:#x} [MQTT-2.2.2-2]")
    if kind in FIXED_LENGTH and len(body) != FIXED_LENGTH[kind]:
        raise ProtocolViolation(f"packet type {kind} must be {FIXED_LENGTH[kind]} bytes long")
    cursor = _Body(body)
    if kind == PUBLISH:
        qos = flags >> 1 & 3
        if qos == 3 or (qos == 0 and flags & 8):
            raise ProtocolViolation("PUBLISH with QoS 3, or DUP with QoS 0 [MQTT-3.3.1-2/4]")
        topic = cursor.text("the topic")
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolViolation("a PUBLISH topic must be non-empty, without wildcards [MQTT-3.3.2-2]")
        if qos:
            cursor.take(2)  # the packet id
        cursor.take(len(body) - cursor.pos)  # the payload: any bytes
    elif kind in (SUBSCRIBE, UNSUBSCRIBE):
        cursor.u16()
        if cursor.done():
            raise ProtocolViolation("SUBSCRIBE/UNSUBSCRIBE without a topic filter [MQTT-3.8.3-3]")
        while not cursor.done():
            _check_filter(cursor.text("a topic filter"))
            if kind == SUBSCRIBE and cursor.take(1)[0] > 2:
                raise ProtocolViolation("a requested QoS above 2, or reserved bits set [MQTT-3.8.3-4]")
    elif kind == CONNECT:
        _check_connect(cursor)
    else:
        cursor.take(len(body))
    if not cursor.done():
        raise ProtocolViolation(f"{len(body) - cursor.pos} stray bytes after a packet of type {kind}")


def _check_connect(cursor: _Body) -> None:
    """The CONNECT's strings; amqtt checks the protocol name, level and flags (with CONNACK)."""
    cursor.text("the protocol name")
    cursor.take(1)  # level: amqtt answers a wrong one with CONNACK 1
    flags = cursor.take(1)[0]
    cursor.take(2)  # keep-alive
    cursor.text("the client id")
    if flags & 0x04:
        cursor.text("the will topic")
        cursor.take(cursor.u16())
    if flags & 0x80:
        cursor.text("the username")
    if flags & 0x40:
        cursor.take(cursor.u16())


class FramedReader(ReaderAdapter):
    """amqtt's reader adapter, serving one checked packet at a time from ``inner``."""

    def __init__(self, inner: ReaderAdapter, max_packet_bytes: int) -> None:
        self._inner = inner
        self.max_packet_bytes = max_packet_bytes
        self._packet = b""
        self._pos = 0
        self._packets = 0
        # True while next_packet() waits for the first bytes of a packet: nothing of the
        # next packet has been read, so whole packets arriving now may be taken elsewhere
        # (broker.connection.AckingStreamReader takes PUBACKs).
        self.at_boundary = False

    @property
    def inner(self) -> ReaderAdapter:
        """The adapter this reader reads from."""
        return self._inner

    async def _exactly(self, count: int) -> bytes:
        data = await self._inner.read(count) if count else b""
        if len(data) < count:  # amqtt's read_or_raise turns this into "no more data"
            raise asyncio.IncompleteReadError(data, count)
        return data

    async def _next_packet(self) -> tuple[int, bytes]:
        # Every packet has its type and at least one length byte: one read for both.
        header = await self._exactly(2)
        self.at_boundary = False
        length, shift, digit = header[1] & 0x7F, 7, header[1]
        for _ in range(3):
            if not digit & 0x80:
                break
            digit = (await self._exactly(1))[0]
            header += bytes([digit])
            length += (digit & 0x7F) << shift
            shift += 7
        else:
            if digit & 0x80:
                raise ProtocolViolation("a remaining length longer than four bytes [MQTT-2.2.3]")
        if length > self.max_packet_bytes:
            raise ProtocolViolation(f"a packet of {length} bytes; the limit is {self.max_packet_bytes}")
        body = await self._exactly(length)
        if header != _PUBACK_HEADER or not self._packets:  # a well-formed PUBACK needs no check
            check_packet(header[0] >> 4, header[0] & 0x0F, body, first=self._packets == 0)
        self._packets += 1
        self._packet, self._pos = header + body, 0
        return header[0], body

    async def next_packet(self) -> tuple[int, bytes]:
        """The next whole, checked packet: its first byte and its body.

        amqtt can still decode it through :meth:`read`; :meth:`skip` marks it handled.
        Whatever an earlier packet left unread is discarded first.
        """
        self._pos = len(self._packet)
        self.at_boundary = True
        try:
            return await self._next_packet()
        finally:
            self.at_boundary = False

    def skip(self) -> None:
        """The current packet was handled without amqtt's decoder."""
        self._pos = len(self._packet)

    async def read(self, n: int = -1) -> bytes:
        if self._pos == len(self._packet):
            await self._next_packet()
        if n < 0 or self._pos + n > len(self._packet):
            raise ProtocolViolation("a read past the end of the packet")
        self._pos += n
        return self._packet[self._pos - n : self._pos]

    def feed_eof(self) -> None:
        self._inner.feed_eof()
