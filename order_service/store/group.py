"""Group commit: the writers of one process that wait for their turn share one transaction.

On SQLite every order is a short transaction that ends with a ``COMMIT``, and with
``synchronous=FULL`` (the default) that commit is an fsync of the log. Writers take turns
(:class:`~order_service.store.db.WriterGate`), so under load they queue, and each then
pays for a turn of its own: the gate, ``BEGIN IMMEDIATE``, the ``COMMIT`` and its fsync,
and a wake-up of the relay, which then publishes that one order's messages in a frame of
their own.

:func:`run` lets the threads of this process that are waiting meanwhile go together. The
first becomes the leader; those that arrive while it writes queue behind it; when it is
done it hands the lead to the first of them, which runs all of the queued turns in one
transaction, each in a ``SAVEPOINT`` of its own, and commits them with one fsync. Then the
relay is woken once for all of them. A leader takes the queue once it has the writers' turn,
so the threads that waited for the turn meanwhile (while another process or the relay held
it) go with it.

What a caller sees does not change:

- a turn's result or exception is its own: a refused turn (an unknown item, an
  Idempotency-Key used with another body) is rolled back to its savepoint and raised in its
  own thread, and the others commit;
- nothing is answered before it is committed: every turn of a transaction waits for its
  ``COMMIT``, and if the ``BEGIN`` or the ``COMMIT`` fails, every turn of it gets that error
  and none of them is written;
- one order at a time (concurrency 1) is a transaction of its own, as before: a turn that
  finds no leader leads at once and runs alone, with no savepoint.

The turns of one transaction see each other's writes, as they would have seen them
committed a moment earlier: the order numbers, the outbox ids and an Idempotency-Key's
replay follow the queue's order. PostgreSQL, or ``ORDERBUS_SQLITE_GROUP_COMMIT=false``:
each turn is its own transaction (:func:`run` calls it directly).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from order_service.store.db import OrderbusSqliteDatabase, db

T = TypeVar("T")

#: Most turns one transaction takes (a worker has fewer threads than this).
MAX_TURNS = 32

_enabled = True


def configure(enabled: bool) -> None:
    """Group the turns of this process (SQLite only), or give each its own transaction."""
    global _enabled
    _enabled = enabled


class _NotRun(Exception):
    """A turn's outcome before it has run."""


class _Turn:
    __slots__ = ("fn", "value", "error", "wake", "lead")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = _NotRun("the turn was not run")
        self.lead = False
        self.wake = threading.Lock()
        self.wake.acquire()  # released by the leader: done, or your lead

    def run(self) -> None:
        try:
            self.value = self.fn()
            self.error = None
        except Exception as exc:  # its savepoint (or transaction) is rolled back; the others go on
            self.error = exc

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class GroupCommit:
    """The queue of one process's turns (one per database in the process: :data:`group`)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queue: list[_Turn] = []
        self._busy = False
        #: transactions run and turns committed in them (the tests' and the bench's counters)
        self.transactions = 0
        self.turns = 0

    def waiting(self) -> int:
        """Turns queued, the leader's among them until it has the writers' turn."""
        with self._mutex:
            return len(self._queue)

    def run(self, database: OrderbusSqliteDatabase, fn: Callable[[], T]) -> T:
        """``fn()`` (which opens ``db.atomic()`` itself), in a transaction it may share."""
        turn = _Turn(fn)
        with self._mutex:
            self._queue.append(turn)
            lead = not self._busy
            self._busy = True
        if not lead:
            turn.wake.acquire()  # until a leader has run it, or hands this thread the lead
            if not turn.lead:
                return cast(T, turn.outcome())
        # The lead: wait for the writers' turn, then take every turn queued by then.
        try:
            database.take_turn()
        except Exception as exc:  # no turn (the gate's timeout): none of them is written
            batch = self._take()
            for queued in batch:
                queued.error = exc
            self._hand_over(batch, turn)
            raise
        batch = self._take()
        try:
            self._write(batch)
        finally:
            database.end_turn()  # (the COMMIT or ROLLBACK has let go already)
            self._hand_over(batch, turn)
        return cast(T, turn.outcome())

    def _take(self) -> list[_Turn]:
        """The queue's first turns (the leader's own is the first of them)."""
        with self._mutex:
            batch, self._queue = self._queue[:MAX_TURNS], self._queue[MAX_TURNS:]
        return batch

    def _write(self, batch: list[_Turn]) -> None:
        self.transactions += 1
        self.turns += len(batch)
        if len(batch) == 1:
            batch[0].run()  # its own db.atomic() is the transaction
            return
        try:
            with db.atomic():  # BEGIN IMMEDIATE, in the writers' turn; each fn's atomic: a savepoint
                for turn in batch:
                    turn.run()
                    if turn.error is not None and not _open():
                        # SQLite rolled the whole transaction back (a full disk, an I/O error):
                        # the turns before this one are gone too, and what follows would run
                        # outside any transaction. None of them is written.
                        raise turn.error
        except BaseException as exc:  # not committed: none of them is written
            for turn in batch:
                turn.value, turn.error = None, exc
            if not isinstance(exc, Exception):
                raise

    def _hand_over(self, batch: list[_Turn], own: _Turn) -> None:
        with self._mutex:
            successor = self._queue[0] if self._queue else None
            if successor is not None:
                successor.lead = True
            else:
                self._busy = False
        if successor is not None:
            successor.wake.release()
        for turn in batch:
            if turn is not own:
                turn.wake.release()


def _open() -> bool:
    """Is this thread's connection still inside its transaction?"""
    conn = db.obj._state.conn
    return conn is not None and bool(conn.in_transaction)


#: This process's queue.
group = GroupCommit()


def run(fn: Callable[[], T]) -> T:
    """Run ``fn``, a write that opens its own ``db.atomic()``, grouped with the writes of
    this process's other threads that wait meanwhile (SQLite; see the module's text)."""
    database = db.obj
    if not _enabled or not isinstance(database, OrderbusSqliteDatabase) or database.in_transaction():
        return fn()  # (inside a transaction already: fn's atomic is a savepoint of it, as ever)
    return group.run(database, fn)
