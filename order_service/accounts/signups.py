"""The sign-up limit: at most so many new customer accounts per client address and window.

Kept in memory, per API process (each API worker process counts on its own, so an address
may sign up ``limit`` times per worker): a signup is rare and cheap to refuse, and an
attacker creating accounts in bulk is slowed down all the same. Memory is bounded: at
most ``max_addresses`` addresses are tracked (the least recently seen is forgotten
first), each with at most ``limit`` times.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from order_service.errors import TooManyAttempts

MAX_ADDRESSES = 10_000


class SignupLimiter:
    def __init__(
        self,
        limit: int,
        window_seconds: float,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_addresses, self.clock = limit, window_seconds, max_addresses, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def take(self, address: str) -> None:
        """Count one sign-up from ``address``, or raise TooManyAttempts (429) when it has had
        its ``limit`` within the window: ``retry_after`` says when the oldest ages out."""
        now = self.clock()
        with self._lock:
            times = self._seen.pop(address, None) or deque(maxlen=self.limit)
            while times and times[0] <= now - self.window:
                times.popleft()
            self._seen[address] = times  # now the most recently seen
            if len(times) >= self.limit:
                retry = max(1, math.ceil(times[0] + self.window - now))
                raise TooManyAttempts(
                    f"{self.limit} sign-ups from this address within {int(self.window)} s; "
                    f"try again in {retry} s",
                    title="Too many sign-ups",
                    slug="signup-throttled",
                    retry_after=retry,
                )
            times.append(now)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)
