"""SQLite's WAL checkpoint runs off the writers' turn: no request copies the log back into
the database file (it did about every 40th order), the relay's checkpointer does, on a
thread and a connection of its own (order_service/store/checkpoint.py)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from order_service.store.checkpoint import Checkpointer
from order_service.store.db import WAL_BACKSTOP_PAGES
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="a WAL checkpoint is SQLite's")

ORDERS = 80  # about 26 pages of log each: past SQLite's default of 1,000 pages


def _database_file(settings_overrides: dict) -> str:
    return settings_overrides["database_url"][len("sqlite:///") :]


def _log_pages(path: str) -> int:
    """The pages the log holds since it last started again, as a checkpoint from a fresh
    connection reports them (it copies them too: call it last)."""
    with sqlite3.connect(path) as conn:
        _busy, log, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log)


def _write_pages(path: str, autocheckpoint: int, pages: int) -> None:
    """About ``pages`` pages of log, a commit each, by a connection checkpointing past ``autocheckpoint``."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        conn.execute("CREATE TABLE IF NOT EXISTS wal_probe (blob BLOB)")
        for _ in range(pages):
            conn.execute("INSERT INTO wal_probe VALUES (zeroblob(3000))")
            conn.commit()


def test_no_request_checkpoints_the_log(client, admin, place_order, settings_overrides):
    for _ in range(ORDERS):
        place_order()
    path = _database_file(settings_overrides)
    pages = _log_pages(path)
    # The requests' commits left the log whole: past SQLite's default of 1,000, under ours.
    assert 1_000 < pages < WAL_BACKSTOP_PAGES, pages
    # The positive control: commits with SQLite's default checkpoint by themselves, and the
    # log starts again, so the same reading finds fewer pages than were written.
    _write_pages(path, autocheckpoint=1_000, pages=1_500)
    assert _log_pages(path) < 1_000


def test_the_checkpointer_copies_the_whole_log_on_its_own_thread(
    client, admin, place_order, settings_overrides
):
    for _ in range(ORDERS):
        place_order()
    checkpointer = Checkpointer(every=0.05)
    done = threading.Event()
    ran = threading.Thread(target=checkpointer.run, args=(done, lambda: True))
    ran.start()
    try:
        for _ in range(200):  # a round every 50 ms: wait for the first
            if checkpointer.last is not None:
                break
            done.wait(0.05)
    finally:
        done.set()
        checkpointer.wake()
        ran.join(10)
    assert not ran.is_alive()
    assert checkpointer.last is not None
    busy, log, copied = checkpointer.last
    assert busy == 0 and log > 1_000 and copied == log, checkpointer.last  # the requests' log, all of it
    # The next commit starts the log again from its beginning.
    place_order()
    assert _log_pages(_database_file(settings_overrides)) < 100


def test_the_active_relay_runs_the_checkpointer(relay):
    (checkpointer,) = [unit for unit in relay.companions if isinstance(unit, Checkpointer)]
    assert Checkpointer().rounds == 0  # the positive control: none before it runs
    for _ in range(400):  # the relay's thread asks every 0.2 s
        if checkpointer.rounds >= 2:
            break
        threading.Event().wait(0.05)
    assert checkpointer.rounds >= 2 and checkpointer.last is not None
