"""Where the relay starts after a (re)connect: the last published outbox row, read in one
snapshot. It was read with two statements (the first pending row, else the last row); an order
committed between them, with nothing pending at the first, was taken for published, and the
relay never sent it (a dashboard missed that version; the broker kept the older one)."""

from __future__ import annotations

import threading

from order_service.outbox import rehydration
from order_service.store.db import db
from order_service.store.models import Outbox, utcnow


def _commit_row(published: bool) -> int:
    """An outbox row committed by another thread (its own connection), as the API would."""
    made: list[int] = []

    def insert() -> None:
        with db.connection_context():
            row = Outbox.create(
                event_id="evt_race",
                event="order.created",
                kind="status",
                topic="orders/ord_race/status",
                payload="{}",
                published_at=utcnow() if published else None,
            )
            made.append(row.id)

    thread = threading.Thread(target=insert)
    thread.start()
    thread.join(10)
    return made[0]


def test_a_row_committed_while_it_reads_is_not_taken_for_published(app, monkeypatch):
    """A row commits right after the reader's first statement: what it returns is still before
    that row (the row is pending, and will be sent). Positive control: published rows count."""
    with db.connection_context():
        assert rehydration.published_through() == 0
        done = _commit_row(published=True)
        assert rehydration.published_through() == done  # nothing pending: the last row

        database = db.obj
        run = database.execute_sql
        committed: list[int] = []
        reader = threading.get_ident()

        def commit_between(sql, params=None, *args, **kwargs):
            cursor = run(sql, params, *args, **kwargs)
            if not committed and threading.get_ident() == reader:  # once, after its first statement
                committed.append(_commit_row(published=False))
            return cursor

        monkeypatch.setattr(database, "execute_sql", commit_between)
        through = rehydration.published_through()
        monkeypatch.undo()
        assert committed, "the reader ran no statement"
        assert through < committed[0], f"row {committed[0]} (unpublished) was taken for published"
        assert rehydration.published_through() == done  # and now it is pending
