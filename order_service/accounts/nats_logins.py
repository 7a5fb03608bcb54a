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

One rule of Mosquitto's cannot be written in this file: NATS does not make the client id
the username. With ``ORDERBUS_CLUSTER_AUTH_CALLOUT`` (the default) every login therefore
goes through the auth callout (``order_service/ops/callout.py``): the logins live in the
account ``ORDERBUS`` (JetStream on), the callout's own login in ``AUTH``, and
``authorization { auth_callout }`` names the key the callout signs with. The callout checks
each CONNECT against ``nats/logins.json`` (the same entries, re-read when it changes),
refuses a client id other than the username and answers with the login's permissions.

So a node need not know a login to admit it: a login issued is usable as soon as
``logins.json`` is written, before the API answers, and adding one reloads no node (a page
connecting the moment its login is issued is not refused, and no connect in flight is cut by
a reload made for someone else's login). The users file still lists every login: a node
reloading closes every connection whose user its configuration does not name. Only a login
that goes away or changes (expired, revoked, a new secret or new rules) reloads the nodes,
and each node then asks the callout again for every open connection (``reloadAuthorization``
in nats-server): a login gone is cut off then, and a CONNECT in flight at that moment may be
closed (the device connects again).

With the callout off, every change reloads the nodes, and a login issued a moment ago is
refused until its node has reloaded.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from broker import credfiles
from order_service.config import Settings

logger = logging.getLogger(__name__)

PROBE_USER = "orderbus-probe"
#: The auth callout: its login (account AUTH) and the account the logins it admits go to.
CALLOUT_USER = "orderbus-callout"
AUTH_ACCOUNT = "AUTH"
APP_ACCOUNT = "ORDERBUS"
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


def entries(logins: Iterable[tuple[str, str, Iterable[str]]], probe_hash: str | None) -> list[dict]:
    """The users of the file: ``logins`` are (username, bcrypt hash, ACL rules)."""
    users = []
    if probe_hash:
        users.append({"user": PROBE_USER, "password": probe_hash, "permissions": permissions(())})
    for username, hashed, rules in logins:
        users.append({"user": username, "password": hashed, "permissions": permissions(rules)})
    for user in users:
        user["allowed_connection_types"] = list(CONNECTION_TYPES)
    return users


@dataclass(frozen=True)
class Callout:
    """What a users file with the auth callout names: the key its answers are signed with
    (an account public key) and the bcrypt hash of the callout's own secret."""

    issuer: str
    user_hash: str


def _lines(users: list[dict[str, object]], indent: str) -> str:
    # JSON is a subset of NATS's configuration format; quoted, a bcrypt "$2b$..." is no variable.
    return ",\n".join(indent + json.dumps(user, sort_keys=True) for user in users)


def render(
    logins: Iterable[tuple[str, str, Iterable[str]]], probe_hash: str | None, callout: Callout | None = None
) -> str:
    """The users file: ``logins`` are (username, bcrypt hash, ACL rules); with ``callout``, every
    login is in the account ORDERBUS and goes through the auth callout."""
    users = entries(logins, probe_hash)
    header = (
        "# orderbus NATS users: generated from the service's database. Do not edit: it is\n"
        "# rewritten whenever a credential changes (see docs/scaling.md).\n"
    )
    if callout is None:
        return header + f"authorization {{\n  users = [\n{_lines(users, '    ')}\n  ]\n}}\n"
    auth_user: dict[str, object] = {"user": CALLOUT_USER, "password": callout.user_hash}
    auth_user["allowed_connection_types"] = ["STANDARD"]  # the NATS protocol, never MQTT
    return header + (
        "accounts {\n"
        f"  {APP_ACCOUNT} {{\n    jetstream: enabled\n    users = [\n{_lines(users, '      ')}\n    ]\n  }}\n"
        f"  {AUTH_ACCOUNT} {{\n    users = [\n{_lines([auth_user], '      ')}\n    ]\n  }}\n"
        "}\n"
        "authorization {\n  auth_callout {\n"
        f"    issuer: {json.dumps(callout.issuer)}\n"
        f"    account: {json.dumps(AUTH_ACCOUNT)}\n"
        f"    auth_users: [{json.dumps(CALLOUT_USER)}]\n"
        "  }\n}\n"
    )


def render_logins(users: list[dict]) -> str:
    """``nats/logins.json``, what the auth callout checks: the users file's entries (:func:`entries`)."""
    return json.dumps({"users": users}, sort_keys=True, indent=1) + "\n"


def lost(before: list[dict] | None, after: list[dict]) -> bool:
    """Whether an entry of ``before`` is not in ``after``: a login expired or revoked, a new
    secret, new rules. Only then must the nodes reload; a login added needs none. ``before``
    unknown (None: a file that could not be read) counts as lost: a reload too many is safe."""
    if before is None:
        return True
    kept = {json.dumps(user, sort_keys=True) for user in after}
    return any(json.dumps(user, sort_keys=True) not in kept for user in before)


def _read_logins(settings: Settings) -> list[dict] | None:
    """The entries of ``logins.json``: [] when there is none yet, None when it cannot be read."""
    try:
        users = json.loads(logins_path(settings).read_text())["users"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return users if isinstance(users, list) else None


def probe_hash(settings: Settings) -> str | None:
    path = nats_dir(settings) / "probe.bcrypt"
    return path.read_text().strip() if path.exists() else None


def logins_path(settings: Settings) -> Path:
    return nats_dir(settings) / "logins.json"


def write_users(settings: Settings, text: str) -> bool:
    """Write the users file if it differs, atomically; True when it changed."""
    path = users_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return credfiles.write_atomically(path, text, 0o600)


def write(settings: Settings, logins: Iterable[tuple[str, str, Iterable[str]]], probe: str | None) -> bool:
    """Write what the nodes and the callout read for ``logins`` (username, bcrypt hash, ACL
    rules); True when the nodes must reload. Call it under the credential files' lock
    (broker_logins.sync_files): it compares with the ``logins.json`` it replaces.

    With the callout, ``logins.json`` is written first (a login is usable when this returns)
    and only a login gone or changed asks for a reload; without it, any change to the file."""
    logins, lookup = list(logins), callout(settings)
    if lookup is None:
        return write_users(settings, render(logins, probe))
    users = entries(logins, probe)
    before = _read_logins(settings)
    path = logins_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    credfiles.write_atomically(path, render_logins(users), 0o600)
    write_users(settings, render(logins, probe, lookup))
    return lost(before, users)


def ensure_secret(settings: Settings, name: str) -> str:
    """The secret of a login of the cluster's own (the probe, the callout), made once into
    ``nats/<name>-secret`` with its bcrypt hash in ``nats/<name>.bcrypt`` (both 0600)."""
    folder = nats_dir(settings)
    secret_path, hash_path = folder / f"{name}-secret", folder / f"{name}.bcrypt"
    if not (secret_path.exists() and hash_path.exists()):
        secret = secrets.token_urlsafe(32)
        _write_private(secret_path, secret + "\n")
        _write_private(hash_path, hash_secret(secret) + "\n")
    return secret_path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def issuer_seed(settings: Settings) -> bytes:
    """The account nkey seed the callout signs with, made once into ``nats/callout-issuer.nk``."""
    import nkeys  # the cluster extra's; the service runs without it on one broker

    path = nats_dir(settings) / "callout-issuer.nk"
    if not path.exists():
        _write_private(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode() + "\n")
    return path.read_text().strip().encode()


def callout(settings: Settings) -> Callout | None:
    """The auth callout the users file names (its key and login made if missing), or None
    with ``ORDERBUS_CLUSTER_AUTH_CALLOUT`` off."""
    if not settings.cluster_auth_callout:
        return None
    import nkeys

    ensure_secret(settings, "callout")
    issuer = nkeys.from_seed(bytearray(issuer_seed(settings))).public_key.decode()
    user_hash = (nats_dir(settings) / "callout.bcrypt").read_text().strip()
    return Callout(issuer=issuer, user_hash=user_hash)


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
