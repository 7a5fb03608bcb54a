"""Wake the relay within milliseconds of a commit, across processes.

The API sends one datagram to a Unix socket in the data directory after every
successful write; the relay blocks on that socket between outbox scans. A lost
datagram (relay restarting, another host) only delays publishing until the
relay's next periodic scan, so correctness never depends on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from os import getpid
from pathlib import Path

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock: socket.socket | None = None
        self._pid = 0

    def _socket(self) -> socket.socket:
        # One unbound, non-blocking socket per process: sendto is atomic, so threads share it.
        if self._sock is None or self._pid != os.getpid():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock, self._pid = sock, os.getpid()
        return self._sock

    # getpid bound early: __del__ may run at interpreter exit.
    def close(self, _getpid: Callable[[], int] = getpid) -> None:
        if self._sock is not None and self._pid == _getpid():
            self._sock.close()
        self._sock = None

    __del__ = close

    def notify(self) -> None:
        try:
            self._socket().sendto(b"!", self.path)
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError):
            pass  # relay not listening, or a wake-up is already queued
        except OSError as exc:
            logger.debug("relay wake-up not sent: %s", exc)


class Waiter:
    """The relay's end: ``wait(timeout)`` returns early when any notify() arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            self._sock = sock
        except OSError as exc:
            logger.warning("no wake-up socket at %s (%s): falling back to polling", path, exc)

    def wait(self, timeout: float) -> bool:
        if self._sock is None:
            import time

            time.sleep(timeout)
            return False
        self._sock.settimeout(timeout)  # 0: a non-blocking look
        try:
            self._sock.recv(64)
        except (TimeoutError, BlockingIOError):
            return False
        # Swallow the rest of the burst: one scan serves them all.
        self._sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self._sock.recv(64)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
