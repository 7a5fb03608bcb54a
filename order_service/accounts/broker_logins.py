"""MQTT credentials: issued by the service, enforced by the broker through two files.

The database is the single source of truth for who may connect to the broker and
what each login may do. After every change the service rewrites, atomically, a
password file and an ACL file in Mosquitto's formats (``broker.credfiles``):

- the **service** account (the relay) publishes ``orders/#`` and
  ``agents/+/assigned`` and reads ``agents/+/presence``;
- each **agent** device logs in as its agent id, reads ``agents/<id>/#`` and
  writes only ``agents/<id>/presence``;
- each **dashboard** login (one per admin bearer token, expiring and revoked with
  it) reads ``orders/#`` and ``agents/#`` and writes nothing;
- the **bridge** account (``python -m order_service.webhooks`` and ``bridges.socketio``)
  reads ``orders/#`` and ``agents/#`` and writes nothing.

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

from broker import credfiles
from contract.link import BrokerAddress
from order_service.config import Settings
from order_service.store.db import db
from order_service.store.models import Agent, MqttCredential, User, new_id, utcnow

logger = logging.getLogger(__name__)

SERVICE, AGENT, DASHBOARD, BRIDGE = "service", "agent", "dashboard", "bridge"
KINDS = (SERVICE, AGENT, DASHBOARD, BRIDGE)

SERVICE_RULES = ("write orders/#", "write agents/+/assigned", "read agents/+/presence")
DASHBOARD_RULES = ("read orders/#", "read agents/#")

HEADER = (
    "# orderbus MQTT {what}: generated from the service's database. Do not edit: it is\n"
    "# rewritten whenever a credential changes (see docs/security.md).\n"
)


def agent_rules(agent_id: str) -> tuple[str, ...]:
    return (f"read agents/{agent_id}/#", f"write agents/{agent_id}/presence")


def rules_for(credential: MqttCredential) -> tuple[str, ...]:
    if credential.kind == SERVICE:
        return SERVICE_RULES
    if credential.kind == AGENT:
        return agent_rules(credential.username)
    if credential.kind in (DASHBOARD, BRIDGE):
        return DASHBOARD_RULES
    raise ValueError(f"unknown credential kind {credential.kind!r}")


# --- issuing ------------------------------------------------------------------------


def _store(username: str, kind: str, **fields: object) -> str:
    """Create or replace ``username``'s credential; returns the new secret (shown once)."""
    secret = credfiles.new_secret()
    values = {"kind": kind, "secret_hash": credfiles.hash_password(secret), "created_at": utcnow(), **fields}
    with db.atomic():
        updated = MqttCredential.update(**values).where(MqttCredential.username == username).execute()
        if not updated:
            MqttCredential.create(username=username, **values)
    return secret


def issue_agent(agent: Agent) -> str:
    """The agent's device login (username = client id = agent id); replaces any previous one."""
    return _store(agent.id, AGENT, agent=agent)


def issue_dashboard(user: User, token_hash: str, expires_at: datetime) -> tuple[str, str]:
    """A read-only dashboard login tied to one admin bearer token: (username, secret)."""
    username = new_id("dash")
    secret = _store(username, DASHBOARD, user=user, token=token_hash, expires_at=expires_at)
    return username, secret


class MissingServiceSecret(RuntimeError):
    pass


def _account(settings: Settings, kind: str) -> tuple[str, Path, str]:
    """(username, secret file, what it is for) of a process account: the relay's or the bridges'."""
    if kind == SERVICE:
        return settings.mqtt_username, settings.data_dir / "mqtt" / "service-secret", "the service account"
    return settings.bridge_mqtt_username, settings.data_dir / "mqtt" / "bridge-secret", "the bridge account"


def _ensure_account(settings: Settings, kind: str) -> bool:
    """Issue the account unless it exists and its secret file matches; True if (re)issued.

    The secret is kept in a 0600 file under ``<data_dir>/mqtt/`` for the process to read.
    """
    username, path, _ = _account(settings, kind)
    row = MqttCredential.get_or_none(MqttCredential.username == username)
    if row is not None and row.kind == kind and path.exists():
        if credfiles.verify_password(path.read_text().strip(), row.secret_hash):
            return False
    secret = _store(username, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return True


def _login(settings: Settings, kind: str) -> tuple[str, str]:
    username, path, what = _account(settings, kind)
    try:
        return username, path.read_text().strip()
    except FileNotFoundError:
        raise MissingServiceSecret(
            f"no MQTT secret for {what} in {path}; run `python -m order_service bootstrap` (make run does)"
        ) from None


def service_secret_path(settings: Settings) -> Path:
    return _account(settings, SERVICE)[1]


def bridge_secret_path(settings: Settings) -> Path:
    return _account(settings, BRIDGE)[1]


def ensure_service(settings: Settings) -> bool:
    """The relay's login (publishes orders and worklists, reads presence); True if issued."""
    return _ensure_account(settings, SERVICE)


def ensure_bridge(settings: Settings) -> bool:
    """The bridges' read-only login; True if issued."""
    return _ensure_account(settings, BRIDGE)


def service_login(settings: Settings) -> tuple[str, str]:
    """The relay's (username, secret), from ``<data_dir>/mqtt/service-secret``."""
    return _login(settings, SERVICE)


def bridge_login(settings: Settings) -> tuple[str, str]:
    """The bridges' (username, secret), from ``<data_dir>/mqtt/bridge-secret``."""
    return _login(settings, BRIDGE)


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
        if credential.kind == AGENT and (credential.agent_id is None or not credential.agent.active):
            continue
        if credential.kind == DASHBOARD and (credential.user_id is None or not credential.user.active):
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
    if changed:
        reload_mosquitto(settings)
    return changed


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


def bridge_address(settings: Settings) -> BrokerAddress:
    """The broker of ORDERBUS_MQTT_URL, logged in as the bridge account (not the relay's)."""
    address = BrokerAddress.parse(settings.mqtt_url)
    username, secret = bridge_login(settings)
    return dataclasses.replace(address, username=username, password=secret)
