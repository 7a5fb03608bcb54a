"""The relay's recheck: what it sends again when the broker may have acknowledged what it did
not store.

A NATS node acknowledges a retained QoS 1 publish even when storing it in the replicated
retained stream failed (it logs "unable to store retained message" and sends the PUBACK), as
can happen while that stream elects a leader. The store waits up to 5 s first, so such a
failure shows as an acknowledgement that stalled, or comes with a lost connection. After
either, the relay republishes the current state of every order, worklist and feed changed by
the rows acknowledged in the last ``relay_recheck_seconds`` (``Relay._recheck``); clients'
version check absorbs the repeats. Off (a window of 0) on one broker. docs/scaling.md.
"""

from __future__ import annotations

import time
from collections import deque


class RecheckWindow:
    """The acknowledged batches of the last ``seconds``: when each was acknowledged, and the
    outbox row before it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._batches: deque[tuple[float, int]] = deque()

    def __bool__(self) -> bool:
        return self.seconds > 0

    def acknowledged(self, after: int) -> None:
        """A batch of the rows after row ``after`` was acknowledged just now."""
        if self.seconds > 0:
            now = time.monotonic()
            self._batches.append((now, after))
            self._forget(now)  # bounded by the window, not by how long the relay has run

    def since(self) -> int | None:
        """The row after which the window's rows begin; None when none was acknowledged in it."""
        self._forget(time.monotonic())
        return self._batches[0][1] if self._batches else None

    def __len__(self) -> int:
        return len(self._batches)

    def _forget(self, now: float) -> None:
        while self._batches and self._batches[0][0] < now - self.seconds:
            self._batches.popleft()
