"""A second hash of each broker login's secret, for the NATS cluster (docs/scaling.md).

nats-server checks passwords only against bcrypt hashes, Mosquitto only against its own
``$7$`` PBKDF2 ones, and the secret itself is never stored: so each login keeps both
hashes, made when the secret is issued. Logins issued before this migration have none
and are left out of the cluster's users file until they are issued again (a device
logs in again, a page is reloaded; ``bootstrap`` reissues the processes' own). Only adds
a column.
"""

from __future__ import annotations

import peewee


def up(db: peewee.Database, t: dict[str, str]) -> None:
    db.execute_sql("ALTER TABLE mqtt_credentials ADD COLUMN nats_hash TEXT")
