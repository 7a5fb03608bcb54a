"""A bare MQTT 3.1.1 client on a socket, for what paho hides from a test.

It lets a test withhold a PUBACK, see the DUP flag, or fall silent without closing
the connection (a device that vanished), which a well-behaved library never does.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 14


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _remaining_length(len(body)) + body


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    def publish_fields(self) -> tuple[str, int | None, bytes]:
        """(topic, packet id or None for QoS 0, payload) of a PUBLISH."""
        (length,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2 : 2 + length].decode()
        rest = self.body[2 + length :]
        if self.qos:
            (mid,) = struct.unpack("!H", rest[:2])
            return topic, mid, rest[2:]
        return topic, None, rest


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self._next_id = 1
        self.pending: list[Packet] = []  # read while waiting for an acknowledgement

    def connect(
        self,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> tuple[bool, int]:
        """Send CONNECT; returns (session present, CONNACK return code)."""
        flags = 0x02 if clean else 0
        payload = _string(client_id)
        if will is not None:
            topic, message, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _string(topic) + _string(message)
        if username is not None:
            flags |= 0x80
            payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
        body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        self.sock.sendall(packet(CONNECT, 0, body))
        reply = self.read()
        assert reply.kind == CONNACK, reply
        return bool(reply.body[0] & 1), reply.body[1]

    def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        """SUBSCRIBE; returns the SUBACK return codes (0x80 = refused). Other packets are kept."""
        mid = self._mid()
        body = struct.pack("!H", mid) + b"".join(_string(f) + bytes([qos]) for f in filters)
        self.sock.sendall(packet(SUBSCRIBE, 0x02, body))
        while True:
            reply = self.read()
            if reply.kind == SUBACK:
                return list(reply.body[2:])
            self.pending.append(reply)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        body = _string(topic) + (struct.pack("!H", self._mid()) if qos else b"") + payload
        self.sock.sendall(packet(PUBLISH, (qos << 1) | int(retain), body))

    def puback(self, mid: int) -> None:
        self.sock.sendall(packet(PUBACK, 0, struct.pack("!H", mid)))

    def disconnect(self) -> None:
        self.sock.sendall(packet(DISCONNECT, 0, b""))
        self.close()

    def close(self) -> None:
        self.sock.close()

    def read(self, timeout: float | None = None) -> Packet:
        """The next packet; socket.timeout if none arrives in time."""
        if self.pending:
            return self.pending.pop(0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if deadline is not None:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            self._buffer += chunk

    def publishes(self, quiet: float = 1.0) -> list[Packet]:
        """Every PUBLISH until nothing arrives for ``quiet`` seconds (without acknowledging)."""
        got = []
        while True:
            try:
                p = self.read(quiet)
            except TimeoutError:
                return got
            if p.kind == PUBLISH:
                got.append(p)

    def _parse(self) -> Packet | None:
        data = self._buffer
        if len(data) < 2:
            return None
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(data):
                return None
            byte = data[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(data) < i + length:
            return None
        self._buffer = data[i + length :]
        return Packet(data[0] >> 4, data[0] & 0x0F, data[i : i + length])

    def _mid(self) -> int:
        mid = self._next_id
        self._next_id = mid % 65535 + 1
        return mid
