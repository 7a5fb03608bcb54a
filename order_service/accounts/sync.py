"""Keeps the broker's login files in step with the database: one unit, run in the active relay.

The API rewrites the files on every login change; this unit catches what no request
does (a dashboard login that expired) by checking every ``SYNC_SECONDS``, and rewrites
them before the relay connects, since a broker refusing the relay may be missing them.
It writes only on change; a failure is logged, never fatal to publishing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from order_service.accounts import broker_logins
from order_service.config import Settings
from order_service.store.db import db

logger = logging.getLogger(__name__)

SYNC_SECONDS = 10.0


class LoginFileSync:
    name = "login-files"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def sync_now(self) -> None:
        try:
            broker_logins.sync_files(self.settings)
        except OSError as exc:
            logger.error("cannot write the broker's password/ACL files: %s", exc)

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        try:
            while not self._wake.wait(SYNC_SECONDS) and not done.is_set():
                if not still_active():
                    return
                self.sync_now()
        finally:
            db.close()
