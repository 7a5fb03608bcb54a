"""The NATS cluster's users and permissions: the same logins and rules as Mosquitto's files.

With ``ORDERBUS_CLUSTER_NODES`` set (``make run-cluster``, docs/scaling.md) the service
writes, beside Mosquitto's password and ACL files and from the same database, one more
file: ``<data_dir>/nats/users.conf``, the ``authorization`` block every node's
configuration includes. Then it reloads every node (SIGHUP to the pid in each
``<data_dir>/nats/node<i>.pid``); a reload keeps every connection and session.

- Passwords: nats-server checks only bcrypt hashes, so each login keeps a bcrypt hash of
  its secret beside the Mosquitto one (:func:`hash_secret`, made when it is issued).
- Rules: an MQTT topic ``a/b`` is the NATS subject ``a.b`` (``+`` is ``*``, ``#`` is
  ``>``, a ``.`` inside a level is ``//``); ``read`` allows subscribing, ``write``
  publishing, ``deny`` forbids both (NATS checks a wildcard subscription's deny list
  on every message it delivers). A user without a ``write`` rule is denied ``>``.
- Devices, pages and processes may connect over MQTT and MQTT over WebSocket only, never
  with the NATS protocol itself (``allowed_connection_types``).
- ``orderbus-probe``: a login allowed nothing, whose secret is in ``nats/probe-secret``;
  readiness checks connect with it (``order_service/ops/cluster.py``).

One difference from Mosquitto cannot be written in this file: NATS does not make the
client id the username. The service's own clients use their username as client id; a
device that sends another id gets a session of that id with its own permissions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

import bcrypt

from broker import credfiles
from order_service.config import Settings

logger = logging.getLogger(__name__)

PROBE_USER = "orderbus-probe"
#: bcrypt's cost for the logins' secrets: they are 256-bit random strings, so the cost only
#: slows each CONNECT down (there is nothing to brute-force); 4 is bcrypt's least.
BCRYPT_ROUNDS = 4
CONNECTION_TYPES = ("MQTT", "MQTT_WS")


def hash_secret(secret: str) -> str:
    """The bcrypt hash of a login's secret, as a NATS users file holds it."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()


def nats_dir(settings: Settings) -> Path:
    return settings.data_dir / "nats"


def users_path(settings: Settings) -> Path:
    return nats_dir(settings) / "users.conf"


def pid_path(settings: Settings, node: int) -> Path:
    return nats_dir(settings) / f"node{node}.pid"


def subjects(filter_: str) -> list[str]:
    """The NATS subjects an MQTT topic filter covers (``a/#`` also matches ``a`` itself)."""
    levels = [level.replace(".", "//") for level in filter_.split("/")]
    if levels[0] == "":  # a leading '/' (NATS's MQTT mapping)
        levels[0] = "/"
    mapped = ["*" if level == "+" else ">" if level == "#" else level for level in levels]
    if mapped[-1] == ">" and len(mapped) > 1:
        return [".".join(mapped[:-1]), ".".join(mapped)]
    return [".".join(mapped)]


def permissions(rules: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """NATS permissions of an ACL section's rules (``read|write|readwrite|deny <filter>``)."""
    publish: list[str] = []
    subscribe: list[str] = []
    deny: list[str] = []
    for rule in rules:
        access, filter_ = rule.split(" ", 1)
        mapped = subjects(filter_)
        if access in ("read", "readwrite"):
            subscribe += mapped
        if access in ("write", "readwrite"):
            publish += mapped
        if access == "deny":
            deny += mapped
    return {
        "publish": {"allow": publish, "deny": deny} if publish else {"deny": [">"]},
        "subscribe": {"allow": subscribe, "deny": deny} if subscribe else {"deny": [">"]},
    }


def render(logins: Iterable[tuple[str, str, Iterable[str]]], probe_hash: str | None) -> str:
    """The users file: ``logins`` are (username, bcrypt hash, ACL rules)."""
    users = []
    if probe_hash:
        users.append({"user": PROBE_USER, "password": probe_hash, "permissions": permissions(())})
    for username, hashed, rules in logins:
        users.append({"user": username, "password": hashed, "permissions": permissions(rules)})
    for user in users:
        user["allowed_connection_types"] = list(CONNECTION_TYPES)
    # JSON is a subset of NATS's configuration format; quoted, a bcrypt "$2b$..." is no variable.
    body = ",\n".join("    " + json.dumps(user, sort_keys=True) for user in users)
    return (
        "# orderbus NATS users: generated from the service's database. Do not edit: it is\n"
        "# rewritten whenever a credential changes (see docs/scaling.md).\n"
        f"authorization {{\n  users = [\n{body}\n  ]\n}}\n"
    )


def probe_hash(settings: Settings) -> str | None:
    path = nats_dir(settings) / "probe.bcrypt"
    return path.read_text().strip() if path.exists() else None


def write_users(settings: Settings, text: str) -> bool:
    """Write the users file if it differs (atomically); True when it changed."""
    path = users_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return credfiles.write_atomically(path, text, 0o600)


def reload_nodes(settings: Settings) -> int:
    """SIGHUP every node of this data directory that runs (its pid file); how many were signalled."""
    signalled = 0
    for node in range(1, settings.cluster_nodes + 1):
        path = pid_path(settings, node)
        try:
            pid = int(path.read_text().strip())
            # A pid file outlives a node killed with -9: signal only the node of this config.
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(part.endswith(f"node{node}.conf".encode()) for part in command):
                continue
            os.kill(pid, signal.SIGHUP)
            signalled += 1
        except FileNotFoundError:  # not running: it reads the file when it starts
            pass
        except (OSError, ValueError) as exc:
            logger.warning("could not signal NATS node %d to reload its users (%s: %s)", node, path, exc)
    return signalled
