"""A minimal MQTT 3.1.1 client over a plain socket, for what paho hides.

paho acknowledges every QoS 1 message before the application sees it and never shows
the DUP flag or the exact packet sequence; tests that must withhold a PUBACK, stay
silent past the keep-alive or read a packet's flags use this instead.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, DISCONNECT = 8, 9, 10, 11, 12, 14


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            break
    return bytes([kind << 4 | flags]) + bytes(encoded) + body


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


class RawClient:
    """One TCP connection; every read is bounded by a timeout."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self._buffer = b""
        self.publishes: list[Publish] = []  # PUBLISHes read while waiting for another packet

    # -- sending ---------------------------------------------------------------
    def connect(
        self,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> tuple[bool, int]:
        """Send CONNECT; return CONNACK's (session present, return code)."""
        flags = 0x02 if clean else 0
        payload = _string(client_id)
        if will is not None:
            topic, message, qos, retain = will
            flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
            payload += _string(topic) + _string(message)
        if username is not None:
            flags |= 0x80
            payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
        header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
        self.sock.sendall(_packet(CONNECT, 0, header + payload))
        kind, _flags, body = self.read_packet()
        assert kind == CONNACK, f"expected CONNACK, got packet type {kind}"
        return bool(body[0] & 1), body[1]

    def subscribe(self, *filters: tuple[str, int], packet_id: int = 1) -> list[int]:
        """Send SUBSCRIBE; return SUBACK's return codes (PUBLISHes before it are kept)."""
        body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([q]) for f, q in filters)
        self.sock.sendall(_packet(SUBSCRIBE, 0x02, body))
        while True:
            kind, _flags, body = self._next_non_publish()
            if kind == SUBACK:
                assert struct.unpack("!H", body[:2])[0] == packet_id
                return list(body[2:])

    def unsubscribe(self, *filters: str, packet_id: int = 1) -> None:
        """Send UNSUBSCRIBE and wait for its UNSUBACK (PUBLISHes before it are kept)."""
        body = struct.pack("!H", packet_id) + b"".join(_string(f) for f in filters)
        self.sock.sendall(_packet(UNSUBSCRIBE, 0x02, body))
        while True:
            kind, _flags, body = self._next_non_publish()
            if kind == UNSUBACK:
                assert struct.unpack("!H", body[:2])[0] == packet_id
                return

    def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id: int = 1) -> None:
        body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
        self.sock.sendall(_packet(PUBLISH, qos << 1, body))

    def puback(self, packet_id: int) -> None:
        self.sock.sendall(_packet(PUBACK, 0, struct.pack("!H", packet_id)))

    def disconnect(self) -> None:
        self.sock.sendall(_packet(DISCONNECT, 0, b""))

    def close(self) -> None:
        self.sock.close()

    # -- receiving -------------------------------------------------------------
    def _read_exactly(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete packet from the broker in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no complete packet from the broker in time") from None
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def read_packet(self, timeout: float | None = None) -> tuple[int, int, bytes]:
        """The next packet as (type, flags, body); TimeoutError or ConnectionError otherwise."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        first = self._read_exactly(1, deadline)[0]
        length, shift = 0, 0
        while True:
            digit = self._read_exactly(1, deadline)[0]
            length += (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        return first >> 4, first & 0x0F, self._read_exactly(length, deadline)

    def _next_non_publish(self, timeout: float | None = None) -> tuple[int, int, bytes]:
        while True:
            kind, flags, body = self.read_packet(timeout)
            if kind != PUBLISH:
                return kind, flags, body
            self.publishes.append(self._decode_publish(flags, body))

    @staticmethod
    def _decode_publish(flags: int, body: bytes) -> Publish:
        qos = flags >> 1 & 3
        (topic_length,) = struct.unpack("!H", body[:2])
        topic = body[2 : 2 + topic_length].decode()
        rest = body[2 + topic_length :]
        packet_id = None
        if qos:
            (packet_id,) = struct.unpack("!H", rest[:2])
            rest = rest[2:]
        return Publish(topic, rest, qos, bool(flags & 1), bool(flags & 8), packet_id)

    def read_publish(self, timeout: float | None = None) -> Publish:
        """The next PUBLISH (kept ones first); other packet types are an AssertionError."""
        if self.publishes:
            return self.publishes.pop(0)
        kind, flags, body = self.read_packet(timeout)
        assert kind == PUBLISH, f"expected PUBLISH, got packet type {kind}"
        return self._decode_publish(flags, body)

    def wait_closed(self, timeout: float) -> bool:
        """True once the broker closes the connection within ``timeout`` (data read is dropped)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False
