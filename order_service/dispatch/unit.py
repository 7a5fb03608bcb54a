"""The loop of a unit run in the active relay (the dispatch timers, the location intake)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import peewee

from order_service.store.db import db

logger = logging.getLogger(__name__)


def run_unit(
    name: str,
    done: threading.Event,
    still_active: Callable[[], bool],
    wake: threading.Event,
    step: Callable[[], None],
    due: Callable[[], float],
) -> None:
    """Run ``step`` whenever ``wake`` is set or the monotonic time ``due()`` comes, until
    ``done`` is set or the relay stops being active. An error in a step is logged, never
    the end of the unit; the thread's database connection is closed on the way out."""
    try:
        while not done.is_set():
            wake.clear()
            try:
                if not still_active():
                    return
                step()
            except peewee.DatabaseError as exc:
                logger.error("%s: database error: %s", name, exc)
            except Exception:  # a bug here must not stop the unit for good
                logger.exception("%s failed", name)
            wake.wait(max(0.0, due() - time.monotonic()))
    finally:
        db.close()
