"""MQTT credentials: issued by the service, enforced by the broker through two files.

The database is the single source of truth for who may connect to the broker and
what each login may do. After every change the service rewrites, atomically, a
password file and an ACL file in Mosquitto's formats (``broker.credfiles``):

- the **service** account (the relay) publishes ``orders/#``, ``agents/+/assigned``,
  ``agents/+/location``, ``customers/+/orders`` and ``catalog``, reads ``agents/+/presence``
  and ``agents/+/location/report``, and alone reads and writes
  ``orderbus/relay/epoch`` (its retained marker, ``outbox/relay.py``);
- each **agent** device logs in as its agent id, reads ``agents/<id>/#`` and
  ``catalog`` and writes only ``agents/<id>/presence`` and ``agents/<id>/location/report``;
- each **dashboard** login (one per dashboard page, tied to an admin bearer token,
  expiring and revoked with it) reads ``orders/#``, ``agents/#`` and ``catalog`` and
  writes nothing;
- each **customer** login (one per shop page or customer CLI, tied to a customer's
  bearer token, expiring and revoked with it) reads only ``customers/<its user id>/orders``
  and ``catalog``, and writes nothing;
- the **bridge** accounts, one for ``bridges.socketio`` and one for the webhook worker
  (``python -m order_service.webhooks``), read ``orders/#``, ``agents/#``,
  ``customers/+/orders`` and ``catalog`` and write nothing.

On both brokers the client id IS the username (Mosquitto's ``use_username_as_clientid``;
the embedded broker does the same): whatever id a client sends, it gets its login's
session and connection. So every device, dashboard page and process has a login of its
own; a second connection with the same login takes over the first (which is how a new
relay fences an old one).

Secrets are 256-bit random strings returned once and stored only as hashes; they
are cheap to verify, so a reconnect storm cannot stall the broker. Mosquitto
re-reads the files on SIGHUP (``ORDERBUS_MOSQUITTO_PID_FILE`` makes the service
send it); the embedded broker notices the change by itself.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
from datetime import datetime
from pathlib import Path

import peewee

import contract
from broker import credfiles
from contract.link import BrokerAddress
from order_service.accounts import nats_logins
from order_service.config import Settings
from order_service.store.db import db
from order_service.store.models import Agent, MqttCredential, User, new_id, utcnow

logger = logging.getLogger(__name__)

SERVICE, AGENT, DASHBOARD, BRIDGE = "service", "agent", "dashboard", "bridge"
CUSTOMER = "customer"

SERVICE_RULES = (
    "write orders/#",
    "write agents/+/assigned",
    f"write {contract.CUSTOMER_ORDERS_FILTER}",
    f"write {contract.CATALOG}",
    "read agents/+/presence",
    f"write {contract.AGENT_LOCATION_FILTER}",
    f"read {contract.AGENT_LOCATION_REPORT_FILTER}",
    f"readwrite {contract.RELAY_EPOCH}",
)
# Dashboards read every agent's topics but the raw position reports (the service's alone).
DASHBOARD_RULES = (
    "read orders/#",
    "read agents/#",
    f"deny {contract.AGENT_LOCATION_REPORT_FILTER}",
    f"read {contract.CATALOG}",
)
BRIDGE_RULES = (*DASHBOARD_RULES, f"read {contract.CUSTOMER_ORDERS_FILTER}")

HEADER = (
    "# orderbus MQTT {what}: generated from the service's database. Do not edit: it is\n"
    "# rewritten whenever a credential changes (see docs/security.md).\n"
)


def agent_rules(agent_id: str) -> tuple[str, ...]:
    return (
        f"read agents/{agent_id}/#",
        f"read {contract.CATALOG}",
        f"write agents/{agent_id}/presence",
        f"write {contract.agent_location_report(agent_id)}",
    )


def customer_rules(user_id: str) -> tuple[str, ...]:
    """A customer reads its own feed and the catalog; it writes nothing."""
    return (f"read {contract.customer_orders(user_id)}", f"read {contract.CATALOG}")


def rules_for(credential: MqttCredential) -> tuple[str, ...]:
    if credential.kind == SERVICE:
        return SERVICE_RULES
    if credential.kind == AGENT:
        return agent_rules(credential.username)
    if credential.kind == DASHBOARD:
        return DASHBOARD_RULES
    if credential.kind == BRIDGE:
        return BRIDGE_RULES
    if credential.kind == CUSTOMER and credential.user_id:
        return customer_rules(credential.user_id)
    raise ValueError(f"unknown credential kind {credential.kind!r}")


# --- issuing ------------------------------------------------------------------------


def _store(username: str, kind: str, **fields: object) -> str:
    """Create or replace ``username``'s credential; returns the new secret (shown once)."""
    secret = credfiles.new_secret()
    values = {
        "kind": kind,
        "secret_hash": credfiles.hash_password(secret),
        "nats_hash": nats_logins.hash_secret(secret),
        "created_at": utcnow(),
        **fields,
    }
    with db.atomic():
        updated = MqttCredential.update(**values).where(MqttCredential.username == username).execute()
        if not updated:
            MqttCredential.create(username=username, **values)
    return secret


def issue_agent(agent: Agent) -> str:
    """The agent's device login (username = client id = agent id); replaces any previous one."""
    return _store(agent.id, AGENT, agent=agent)


DASHBOARD_LOGINS_PER_TOKEN = 16  # pages open at once with one bearer token


def issue_dashboard(user: User, token_hash: str, expires_at: datetime) -> tuple[str, str]:
    """A read-only dashboard login tied to one admin bearer token: (username, secret).

    One per dashboard page (the client id is the username, so two pages sharing a login
    would take each other's connection, for ever). A token keeps its newest
    ``DASHBOARD_LOGINS_PER_TOKEN`` logins: each page load asks for one, and the oldest go,
    so reloading cannot grow the broker's files without bound."""
    return _issue_per_token(DASHBOARD, "dash", user, token_hash, expires_at)


def issue_customer(user: User, token_hash: str, expires_at: datetime) -> tuple[str, str]:
    """A read-only login for one shop page or customer CLI, tied to one customer's bearer
    token: (username, secret). It reads that customer's feed and the catalog only; a token
    keeps its newest ``DASHBOARD_LOGINS_PER_TOKEN``, as a dashboard's does."""
    return _issue_per_token(CUSTOMER, "cust", user, token_hash, expires_at)


def _issue_per_token(
    kind: str, prefix: str, user: User, token_hash: str, expires_at: datetime
) -> tuple[str, str]:
    username = new_id(prefix)
    with db.atomic():
        secret = _store(username, kind, user=user, token=token_hash, expires_at=expires_at)
        kept = (
            MqttCredential.select(MqttCredential.username)
            .where(MqttCredential.kind == kind, MqttCredential.token == token_hash)
            .order_by(MqttCredential.created_at.desc(), MqttCredential.username.desc())
            .limit(DASHBOARD_LOGINS_PER_TOKEN)
        )
        MqttCredential.delete().where(
            MqttCredential.kind == kind,
            MqttCredential.token == token_hash,
            MqttCredential.username.not_in([row.username for row in kept]),
        ).execute()
    return username, secret


class MissingServiceSecret(RuntimeError):
    pass


# The processes with a broker login of their own (the client id is the username, so two
# processes sharing a login would take each other's connection).
RELAY, SOCKETIO, WEBHOOKS = "relay", "socketio", "webhooks"
BRIDGES = (SOCKETIO, WEBHOOKS)


def _account(settings: Settings, process: str) -> tuple[str, str, Path, str]:
    """(kind, username, secret file, what it is for) of a process's login."""
    folder = settings.data_dir / "mqtt"
    if process == RELAY:
        return SERVICE, settings.mqtt_username, folder / "service-secret", "the relay"
    if process == SOCKETIO:
        return BRIDGE, settings.socketio_mqtt_username, folder / "socketio-secret", "the Socket.IO bridge"
    if process == WEBHOOKS:
        return BRIDGE, settings.webhooks_mqtt_username, folder / "webhooks-secret", "the webhook worker"
    raise ValueError(f"no broker login for the process {process!r}")


def process_username(settings: Settings, process: str) -> str:
    return _account(settings, process)[1]


def _ensure_account(settings: Settings, process: str) -> bool:
    """Issue the login unless it exists and its secret file matches; True if (re)issued.

    The secret is kept in a 0600 file under ``<data_dir>/mqtt/`` for the process to read.
    """
    kind, username, path, _ = _account(settings, process)
    row = MqttCredential.get_or_none(MqttCredential.username == username)
    # On a cluster, a login issued before the NATS hash existed is issued again.
    if (
        row is not None
        and row.kind == kind
        and path.exists()
        and (row.nats_hash or not settings.cluster_nodes)
    ):
        if credfiles.verify_password(path.read_text().strip(), row.secret_hash):
            return False
    secret = _store(username, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return True


def _login(settings: Settings, process: str) -> tuple[str, str]:
    _, username, path, what = _account(settings, process)
    try:
        return username, path.read_text().strip()
    except FileNotFoundError:
        raise MissingServiceSecret(
            f"no MQTT secret for {what} in {path}; run `python -m order_service bootstrap` (make run does)"
        ) from None


def service_secret_path(settings: Settings) -> Path:
    return _account(settings, RELAY)[2]


def bridge_secret_path(settings: Settings, process: str) -> Path:
    return _account(settings, process)[2]


def ensure_service(settings: Settings) -> bool:
    """The relay's login (publishes orders and worklists, reads presence); True if issued."""
    return _ensure_account(settings, RELAY)


def ensure_bridges(settings: Settings) -> list[str]:
    """The read-only logins of the Socket.IO bridge and the webhook worker; those (re)issued."""
    return [process_username(settings, p) for p in BRIDGES if _ensure_account(settings, p)]


def service_login(settings: Settings) -> tuple[str, str]:
    """The relay's (username, secret), from ``<data_dir>/mqtt/service-secret``."""
    return _login(settings, RELAY)


def bridge_login(settings: Settings, process: str) -> tuple[str, str]:
    """A bridge's (username, secret), from ``<data_dir>/mqtt/<process>-secret``."""
    return _login(settings, process)


# --- the files ------------------------------------------------------------------------


def live_credentials(now: datetime | None = None) -> list[MqttCredential]:
    """Credentials that may log in now: unexpired, of an active agent or user."""
    now = now or utcnow()
    query = (
        MqttCredential.select(MqttCredential, Agent, User)
        .join(Agent, peewee.JOIN.LEFT_OUTER, on=MqttCredential.agent == Agent.id)
        .switch(MqttCredential)
        .join(User, peewee.JOIN.LEFT_OUTER, on=MqttCredential.user == User.id)
        .where(MqttCredential.expires_at.is_null() | (MqttCredential.expires_at > now))
        .order_by(MqttCredential.kind, MqttCredential.username)
    )
    live = []
    for credential in query:
        if credential.kind == AGENT and (credential.agent is None or not credential.agent.active):
            continue
        if credential.kind in (DASHBOARD, CUSTOMER) and (
            credential.user is None or not credential.user.active
        ):
            continue
        live.append(credential)
    return live


def render(now: datetime | None = None) -> tuple[str, str]:
    """(password file, ACL file) for every live credential."""
    credentials = live_credentials(now)
    passwd = credfiles.render_password_file({c.username: c.secret_hash for c in credentials})
    acl = credfiles.render_acl([(c.username, rules_for(c)) for c in credentials])
    return HEADER.format(what="password file") + passwd, HEADER.format(what="ACL") + acl


def sync_files(settings: Settings) -> bool:
    """Rewrite both files from the database if they differ; True when something changed.

    Call it after committing a credential change. A lock file serialises writers
    (API workers, the relay, the CLI); each renders inside the lock, after its own
    commit, so the last writer always writes the newest state. The ACL goes first:
    a login present in one file but not the other can do nothing.
    """
    passwd_path, acl_path = settings.mqtt_password_path, settings.mqtt_acl_path
    lock_path = acl_path.parent / ".mqtt-files.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        passwd, acl = render()
        changed = credfiles.write_atomically(acl_path, acl, settings.mqtt_file_mode)
        changed = credfiles.write_atomically(passwd_path, passwd, settings.mqtt_file_mode) or changed
        nats_changed = bool(settings.cluster_nodes) and nats_logins.write(settings, *nats_logins_of(settings))
    if changed:
        reload_mosquitto(settings)
    if nats_changed:
        nats_logins.reload_nodes(settings)
    return changed or nats_changed


def nats_logins_of(
    settings: Settings, now: datetime | None = None
) -> tuple[list[tuple[str, str, tuple[str, ...]]], str | None]:
    """The NATS cluster's logins (username, bcrypt hash, ACL rules) of every live credential,
    and the readiness probe's hash (accounts/nats_logins.py writes them)."""
    logins = [(c.username, c.nats_hash, rules_for(c)) for c in live_credentials(now) if c.nats_hash]
    return logins, nats_logins.probe_hash(settings)


def reload_mosquitto(settings: Settings) -> None:
    """SIGHUP the Mosquitto whose pid file is configured, so it re-reads both files."""
    if settings.mosquitto_pid_file is None:
        return
    try:
        pid = int(Path(settings.mosquitto_pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except FileNotFoundError:  # not running: it reads the files when it starts
        logger.info("Mosquitto is not running (no %s); nothing to reload", settings.mosquitto_pid_file)
    except (OSError, ValueError) as exc:
        logger.warning(
            "could not signal Mosquitto to reload its password and ACL files (%s: %s)",
            settings.mosquitto_pid_file,
            exc,
        )


def bridge_address(settings: Settings, process: str) -> BrokerAddress:
    """The broker of ORDERBUS_MQTT_URL (and ORDERBUS_MQTT_CA_FILE), logged in as that bridge's own
    login (not the relay's)."""
    address = settings.mqtt_address
    username, secret = bridge_login(settings, process)
    return dataclasses.replace(address, username=username, password=secret)
