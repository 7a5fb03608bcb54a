"""PUBLISH packets encoded once per message, not once per subscriber.

A message routed to 1,000 subscribers was encoded 1,000 times by amqtt's packet
classes (a fixed header, a variable header and a payload object each, then bytes). A
:class:`Publication` holds a message's topic and payload and encodes a PUBLISH for it
once per (QoS, retain, DUP) flag combination; each subscriber's copy is that template
with its own 2-byte packet id written in (:meth:`Publication.packet`).
"""

from __future__ import annotations


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length [MQTT-2.2.3]."""
    encoded = bytearray()
    while True:
        digit, length = length & 0x7F, length >> 7
        encoded.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(encoded)


class Publication:
    """One message's topic and payload, with its encoded PUBLISH templates."""

    __slots__ = ("_templates", "data", "topic")

    def __init__(self, topic: str, data: bytes | bytearray) -> None:
        self.topic = topic
        self.data = data
        self._templates: dict[int, tuple[bytes, int]] = {}

    def _template(self, flags: int) -> tuple[bytes, int]:
        found = self._templates.get(flags)
        if found is None:
            topic = self.topic.encode("utf-8")
            qos = flags >> 1 & 3
            variable = len(topic).to_bytes(2, "big") + topic + (b"\0\0" if qos else b"")
            header = bytes([0x30 | flags]) + remaining_length(len(variable) + len(self.data))
            offset = len(header) + 2 + len(topic)  # of the packet id
            found = self._templates[flags] = (header + variable + bytes(self.data), offset)
        return found

    def packet(
        self, qos: int, retain: bool, packet_id: int | None, *, dup: bool = False
    ) -> bytes | bytearray:
        """The PUBLISH packet's bytes: with ``packet_id`` for QoS 1/2, without for QoS 0."""
        template, offset = self._template((8 if dup else 0) | qos << 1 | (1 if retain else 0))
        if not qos:
            return template
        assert packet_id is not None
        packet = bytearray(template)
        packet[offset] = packet_id >> 8
        packet[offset + 1] = packet_id & 0xFF
        return packet
