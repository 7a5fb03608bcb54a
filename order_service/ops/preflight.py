"""Checks `make run-prod` runs before starting anything: each failure is one clear message.

The production path runs against services the operator runs (PostgreSQL, the
system's Mosquitto): these checks say which one is missing and what to do,
instead of a traceback from the first process that trips over it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import time
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2

from contract.link import BrokerAddress, BrokerUnavailable, MqttLink, masked_url
from order_service.accounts import broker_logins
from order_service.config import Settings


class PreflightError(Exception):
    """A check failed; the message says what to do."""


def check_database(settings: Settings) -> str:
    """PostgreSQL answers at ORDERBUS_DATABASE_URL (SQLite: a warning only); return a summary."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        return (
            f"database {url}: SQLite (one machine only; production runs on PostgreSQL,"
            " ORDERBUS_DATABASE_URL=postgresql://user@host:5432/dbname)"
        )
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise PreflightError(
            f"cannot reach the database at {masked_url(url)}:\n  {str(exc).strip()}\n"
            "  Is PostgreSQL running, and does the database exist? Create it with e.g.\n"
            "      createdb -h 127.0.0.1 -U postgres orderbus\n"
            "  and check ORDERBUS_DATABASE_URL (user, password, host, port, database name)."
        ) from None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
            assert row is not None  # SHOW returns one row
            (version,) = row
    finally:
        conn.close()
    return f"database {masked_url(url)}: PostgreSQL {version}"


def ensure_database(settings: Settings) -> str:
    """Create ORDERBUS_DATABASE_URL's PostgreSQL database if the server lacks it (make run-cluster)."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        return f"database {url}: SQLite"
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise PreflightError(f"ORDERBUS_DATABASE_URL: {name!r} is not a plain database name")
    try:
        conn = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise PreflightError(
            f"cannot reach the PostgreSQL server of {masked_url(url)}:\n  {str(exc).strip()}"
        ) from None
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return f"database {masked_url(url)}: exists"
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"database {masked_url(url)}: created"


def check_broker_configured(settings: Settings) -> str:
    """ORDERBUS_MQTT_URL is set: in production the broker is the system's, not ours to start."""
    if not os.environ.get("ORDERBUS_MQTT_URL"):
        raise PreflightError(
            "ORDERBUS_MQTT_URL is not set: the production path uses the system's Mosquitto,\n"
            "  e.g. ORDERBUS_MQTT_URL=mqtt://127.0.0.1:1883 (see docs/production.md)."
        )
    return f"broker {settings.mqtt_address}: checked after bootstrap"


def check_broker_reachable(settings: Settings) -> str:
    """Something listens at ORDERBUS_MQTT_URL; with mqtts:// or wss://, its certificate is trusted."""
    address = settings.mqtt_address
    try:
        sock = socket.create_connection((address.host, address.port), timeout=3)
    except OSError as exc:
        raise PreflightError(
            f"cannot reach the MQTT broker at {address}: {exc}.\n"
            "  Is Mosquitto running (systemctl status mosquitto) and listening there? It needs the\n"
            "  files bootstrap has just written:\n" + _files(settings)
        ) from None
    context = address.ssl_context()
    with sock:
        if context is None:
            return f"broker {address}: reachable"
        try:
            with context.wrap_socket(sock, server_hostname=address.host) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            raise PreflightError(
                f"the MQTT broker at {address} has a certificate this machine does not trust:\n"
                f"  {exc.verify_message}.\n"
                "  The certificate must name that host and be signed by a CA the system trusts, or by\n"
                "  the CA in ORDERBUS_MQTT_CA_FILE"
                + (f" (now {address.ca_file})" if address.ca_file else " (not set)")
                + '; docs/production.md, "TLS".'
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise PreflightError(
                f"no TLS handshake with the MQTT broker at {address}: {exc}.\n"
                "  Does that port speak TLS (Mosquitto: a listener with certfile and keyfile)?"
            ) from None
    return f"broker {address}: reachable, {version}, certificate trusted"


def _files(settings: Settings) -> str:
    return (
        f"      password_file {settings.mqtt_password_path.resolve()}\n"
        f"      acl_file {settings.mqtt_acl_path.resolve()}\n"
        "  (mosquitto.conf at the repository root is the template; docs/production.md,\n"
        '  "Mosquitto reads the service\'s files").'
    )


def check_broker_logins(settings: Settings, wait: float = 5.0) -> str:
    """The broker accepts the relay's and the bridges' logins (after `bootstrap` wrote them),
    refuses a wrong password, and binds client ids to logins.

    Retries for ``wait`` seconds: a Mosquitto just sent SIGHUP re-reads its files in the
    background. The broker uses each login's username as its client id, so these
    connections would take over those of running processes: run it before starting them
    (``make run-prod`` does).
    """
    accounts = [
        ("the relay's", broker_logins.service_login(settings)),
        ("the Socket.IO bridge's", broker_logins.bridge_login(settings, broker_logins.SOCKETIO)),
        ("the webhook worker's", broker_logins.bridge_login(settings, broker_logins.WEBHOOKS)),
    ]
    base = settings.mqtt_address

    def link_as(username: str, secret: str, client_id: str | None = None) -> MqttLink:
        address = dataclasses.replace(base, username=username, password=secret)
        return MqttLink(address, client_id or username, 10)

    for who, (username, secret) in accounts:
        deadline = time.monotonic() + wait
        while True:
            link = link_as(username, secret)
            try:
                link.connect(timeout=5)
                break
            except BrokerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise PreflightError(_login_refused(settings, who, username, exc)) from None
                time.sleep(0.5)
            finally:
                link.close()
    link = link_as(accounts[0][1][0], "not-the-secret")
    try:
        link.connect(timeout=5)
    except BrokerUnavailable:
        pass  # refused, as it must be
    else:
        raise PreflightError(
            f"the broker at {base} accepted a wrong password: it does not check logins against the\n"
            "  service's files (anonymous access on, or no password_file), so anyone could read every\n"
            "  order. Point it at the files and reload it:\n" + _files(settings)
        )
    finally:
        link.close()
    _check_client_ids_bound(base, link_as(*accounts[2][1]), link_as(*accounts[1][1], accounts[2][1][0]))
    return (
        f"broker {base}: accepts the relay's and the bridges' logins, refuses a wrong password,"
        " binds client ids to logins"
    )


def _check_client_ids_bound(base: BrokerAddress, holder: MqttLink, intruder: MqttLink) -> None:
    """``intruder`` (another login) connects with ``holder``'s client id: ``holder`` must stay."""
    try:
        holder.connect(timeout=5)
        try:
            intruder.connect(timeout=5)
        except BrokerUnavailable:
            return  # refused: bound another way, fine
        deadline = time.monotonic() + 1.0
        while not holder.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        if holder.lost:
            raise PreflightError(
                f"the broker at {base} let one login take over another's connection by sending its\n"
                "  client id: any device could knock the relay off and wipe other devices' offline\n"
                "  messages. Set `use_username_as_clientid true` on every listener (mosquitto.conf\n"
                "  at the repository root does) and restart the broker."
            )
    finally:
        intruder.close()
        holder.close()


def _login_refused(settings: Settings, who: str, username: str, exc: Exception) -> str:
    pid_hint = (
        f"  ORDERBUS_MOSQUITTO_PID_FILE={settings.mosquitto_pid_file} is set, so the service sends SIGHUP\n"
        "  after each change; check that this is the running Mosquitto's pid_file and that this\n"
        "  user may signal it."
        if settings.mosquitto_pid_file
        else "  Set ORDERBUS_MOSQUITTO_PID_FILE to its pid_file so that the service makes it re-read\n"
        "  the files after every change (new agent, dashboard login, rotated secret)."
    )
    return (
        f"the broker refused {who} login {username!r}: {exc}.\n"
        "  Mosquitto must read the files the service writes:\n" + _files(settings) + "\n  then reload it:\n"
        "      sudo systemctl reload mosquitto     # or: kill -HUP <its pid>\n" + pid_hint
    )
