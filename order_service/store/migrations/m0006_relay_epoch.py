"""The database's epoch id, which the relay publishes in its retained marker.

A reconnecting relay reads the marker the broker retains on ``orderbus/relay/epoch``:
the same epoch means the broker's retained state came from this database, so only what
it may have missed is republished instead of every order and worklist
(``order_service/outbox/relay.py``). Random, made once per database. Only adds a table.
"""

from __future__ import annotations

import secrets

import peewee


def up(db: peewee.Database, t: dict[str, str]) -> None:
    db.execute_sql("CREATE TABLE relay_epoch (id INTEGER PRIMARY KEY, epoch VARCHAR(32) NOT NULL)")
    db.execute_sql(f"INSERT INTO relay_epoch (id, epoch) VALUES (1, '{secrets.token_hex(16)}')")
