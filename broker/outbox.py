"""A session's bounded queue of messages waiting to be sent, oldest first.

Messages wait here while their client is offline (QoS 1/2 only, clean session off)
and while it is connected but its in-flight window is full (a slow reader). The limit
counts both, as Mosquitto's max_queued_messages does, so a client that reads slowly
cannot grow the broker's memory without bound either.

The limit is a count and a size (``limit_bytes``, the payloads' bytes), both as in
mosquitto.conf (``max_queued_messages`` and ``max_queued_bytes``): the count is large
enough for a burst the size of the whole retained state (a relay republishing 10,000
orders to a dashboard that subscribed a moment before; a limit of 1,000 dropped most
of them), and the size is what bounds a client that stops reading.

Overflow policy, applied when a message arrives and ``limit`` messages (or
``limit_bytes``) are already waiting: drop the oldest waiting QoS 0 message (the new
one, if it is QoS 0 and none older is waiting); with no QoS 0 message, drop the oldest.
Every topic in this system carries state that a newer message supersedes (an order's
status, an agent's whole worklist, each with a version), so after an outage the newest
messages are the ones worth keeping; Mosquitto's choice, dropping the newest, would
leave a device holding stale state until the next change. QoS 0 goes first because its sender asked for no
guarantee. Messages already sent and awaiting acknowledgement are not in the queue
and are never dropped.

The broker counts every drop and logs one warning naming the client per overflow
episode, which lasts until that client's queue is empty again.

Exempt messages (the retained messages answering a SUBSCRIBE) are not counted against
the limit: they are copies of the broker's retained store (at most its size per
SUBSCRIBE), and a SUBSCRIBE answered only in part would leave the client with a
partial picture, the failure Mosquitto users report for large retained sets.

While exempt messages are still waiting, the limit grows by ``allowance`` (the broker
passes its retained store's size): live messages queue behind the replay through no
fault of the client, and dropping them there lost state for good. A dashboard that
subscribed while the relay republished 10,000 retained orders got the replay of what
was stored at its SUBSCRIBE, and the orders stored a moment later only live, where the
limit dropped them: it kept an old status while the broker held the new one. So a
client holds at most its replay plus ``limit + allowance`` messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.wire import Publication


class Queued:
    """One message for one client: what to send and with which flags.

    ``publication``, shared by every client's copy of a message, encodes it once."""

    __slots__ = ("data", "dropped", "exempt", "publication", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int,
        retain: bool,
        publication: Publication | None = None,
    ) -> None:
        self.topic = topic
        self.data = data
        self.qos = qos
        self.retain = retain
        self.publication = publication
        self.dropped = False
        self.exempt = False


class Outbox:
    """FIFO of :class:`Queued` with O(1) push, pop and overflow drop.

    ``order`` holds every message in arrival order; ``_qos0`` and ``_qos12`` index the
    counted ones by class so the overflow policy finds its victim at the head of one.
    A dropped message stays in ``order`` as a tombstone until popped or compacted; the
    newest is never one, so ``order`` is empty exactly when nothing waits (the connected
    sender tests it for each message it could write at once).
    """

    def __init__(self) -> None:
        self.order: deque[Queued] = deque()
        self._qos0: deque[Queued] = deque()
        self._qos12: deque[Queued] = deque()
        self._exempt = 0
        self._tombstones = 0
        self._bytes = 0  # payload bytes of the counted (not exempt) messages waiting
        self.dropped = 0  # messages dropped over this session's lifetime
        self.overflowing = False  # inside an overflow episode (set and cleared by the broker)
        self.wakeup: Callable[[], None] | None = None  # the connected sender's "something changed"
        # The connected sender, while idle: sends a message at once if it can (True).
        self.direct: Callable[[Queued], bool] | None = None

    def __len__(self) -> int:
        return len(self._qos0) + len(self._qos12) + self._exempt

    @property
    def queued_bytes(self) -> int:
        """Payload bytes of the waiting messages that count against the limit."""
        return self._bytes

    def push(
        self,
        item: Queued,
        *,
        limit: int,
        limit_bytes: int | None = None,
        exempt: bool = False,
        allowance: int = 0,
    ) -> int:
        """Queue ``item``; return how many messages were dropped to respect ``limit`` messages
        and ``limit_bytes`` payload bytes (None: no size limit).

        ``allowance`` raises the message limit while exempt messages are waiting. A message
        larger than ``limit_bytes`` on its own still queues, alone; every older counted one
        goes first."""
        dropped = 0
        if exempt:
            item.exempt = True
            self._exempt += 1
        else:
            count_limit = limit + (allowance if self._exempt else 0)
            size = len(item.data)
            while self._qos0 or self._qos12:
                over_count = len(self._qos0) + len(self._qos12) >= count_limit
                over_size = limit_bytes is not None and self._bytes + size > limit_bytes
                if not (over_count or over_size):
                    break
                dropped += 1
                self.dropped += 1
                if self._qos0:
                    self._bury(self._qos0.popleft())
                elif item.qos == 0:
                    return dropped  # the new QoS 0 message is the oldest QoS 0 one
                else:
                    self._bury(self._qos12.popleft())
            (self._qos0 if item.qos == 0 else self._qos12).append(item)
            self._bytes += size
        self.order.append(item)
        if self.wakeup is not None:
            self.wakeup()
        return dropped

    def pop(self) -> Queued | None:
        """The oldest waiting message, or None."""
        while self.order:
            item = self.order.popleft()
            if item.dropped:
                self._tombstones -= 1
                continue
            if item.exempt:
                self._exempt -= 1
            else:
                # Both sequences keep arrival order, so the oldest live message is its class's head.
                (self._qos0 if item.qos == 0 else self._qos12).popleft()
                self._bytes -= len(item.data)
            return item
        return None

    def clear(self) -> None:
        self.order.clear()
        self._qos0.clear()
        self._qos12.clear()
        self._exempt = self._tombstones = self._bytes = 0
        self.overflowing = False

    def _bury(self, victim: Queued) -> None:
        victim.dropped = True
        self._bytes -= len(victim.data)
        victim.data = b""  # free the payload now, not when the tombstone is popped
        victim.publication = None
        self._tombstones += 1
        if self._tombstones > max(64, len(self)):  # an offline client under a flood
            kept = [item for item in self.order if not item.dropped]
            self.order.clear()  # the same deque: the sender holds it
            self.order.extend(kept)
            self._tombstones = 0
