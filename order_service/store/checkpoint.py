"""SQLite's WAL checkpoint, off the writers' turn.

In WAL mode SQLite copies the log back into the database file (a checkpoint) in the
commit that takes the log past ``wal_autocheckpoint`` pages, 1,000 by default. With the
service's writes that was every 40th order or so, in that order's own request and inside
the writers' turn (the gate in ``db.py`` is let go only after the COMMIT returns): the
copy and the database file's fsync added 1–4 ms to that request and made every writer
behind it wait (the end-to-end p99 at concurrency 1, docs/benchmarks/findings.md).

Now every connection checkpoints by itself only past ``db.WAL_BACKSTOP_PAGES`` (about 40 MB
of log: a system without a relay still bounds its log), and the active relay runs
:class:`Checkpointer`, a companion with a thread and a connection of its own, which asks
for a PASSIVE checkpoint every :data:`EVERY_SECONDS`. A PASSIVE checkpoint copies what the
log holds without waiting for readers or writers and without taking the write lock, so
writers go on meanwhile. The log starts again from its beginning at the first write after
a checkpoint that copied all of it: under writes without a pause that is the commit that
reaches the backstop, which finds nearly all of the log copied already (the ``-wal`` file
can then reach about 40 MB). PostgreSQL has nothing of this: the companion returns at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import peewee

from order_service.store.db import db, is_sqlite

logger = logging.getLogger(__name__)

#: How often the relay's checkpointer asks for a checkpoint (a log with nothing new costs
#: SQLite a look at its index).
EVERY_SECONDS = 0.2


class Checkpointer:
    """A relay companion: a PASSIVE checkpoint every :data:`EVERY_SECONDS` (SQLite only)."""

    name = "checkpoint"

    def __init__(self, every: float = EVERY_SECONDS) -> None:
        self.every = every
        self._woken = threading.Event()
        self.rounds = 0  # checkpoints asked for
        self.last: tuple[int, int, int] | None = None  # SQLite's answer: busy, log pages, copied

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        if not is_sqlite():
            return
        db.connect(reuse_if_open=True)
        try:
            while not done.is_set() and still_active():
                self.checkpoint()
                if self._woken.wait(self.every):
                    self._woken.clear()
        finally:
            if not db.is_closed():
                db.close()

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint on this thread's connection (call it outside a transaction)."""
        try:
            busy, log, copied = db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except peewee.DatabaseError as exc:  # a busy or unreachable file: the next round tries again
            logger.warning("WAL checkpoint failed (%s); trying again in %.1f s", exc, self.every)
            return
        self.last = (busy, log, copied)
        self.rounds += 1

    def wake(self) -> None:
        self._woken.set()
