"""Operator commands: ``python -m order_service <command>``."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
from pathlib import Path

import click

from order_service.accounts import broker_logins, users
from order_service.catalog import service as catalog
from order_service.config import Settings, load_settings
from order_service.ops import callout, cluster
from order_service.ops import preflight as preflight_checks
from order_service.ops.cluster import nodes as cluster_nodes
from order_service.store import backup as backups
from order_service.store.db import db, init_db
from order_service.store.migrations import migrate as run_migrations
from order_service.store.models import RelayEpoch, User


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:  # pydantic's message names the variable
        raise click.ClickException(f"bad configuration: {exc}") from None


@click.group()
def main() -> None:
    """orderbus operator commands."""
    logging.basicConfig(level=os.environ.get("ORDERBUS_LOG_LEVEL", "INFO"), format="%(message)s")


@main.command()
def migrate() -> None:
    """Apply pending database migrations (SQLite: a copy is taken first)."""
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(init_db(settings.database_url), log=click.echo)


@main.command()
def bootstrap() -> None:
    """Create the bootstrap admin and the relay's broker login if missing; write the broker's files.

    With no ORDERBUS_ADMIN_PASSWORD, one is generated and kept in <data_dir>/admin-password.
    The relay's MQTT secret is kept in <data_dir>/mqtt/service-secret.
    """
    settings = _settings()
    init_db(settings.database_url)
    password_file = settings.data_dir / "admin-password"
    with db.connection_context():
        user = User.get_or_none(User.username == settings.admin_user)
        if user is None:
            password = settings.admin_password or secrets.token_urlsafe(12)
            if not settings.admin_password:
                _write_secret(password_file, password)
            with db.atomic():
                users.create_user(settings.admin_user, password, "admin", "Administrator")
            click.echo(f"created admin user {settings.admin_user!r}")
        elif user.role != "admin":
            raise click.ClickException(f"user {settings.admin_user!r} exists and is not an admin")
        else:
            click.echo(f"admin user {settings.admin_user!r} exists; its password is unchanged")
        if broker_logins.ensure_service(settings):
            click.echo(f"issued the broker login {settings.mqtt_username!r} for the relay")
        for username in broker_logins.ensure_bridges(settings):
            click.echo(f"issued the broker login {username!r} for a bridge")
        broker_logins.sync_files(settings)
    click.echo(f"broker logins written to {settings.mqtt_password_path} and {settings.mqtt_acl_path}")
    where = "ORDERBUS_ADMIN_PASSWORD" if settings.admin_password else str(password_file)
    if user is not None and not password_file.exists() and not settings.admin_password:
        where = "the password it was created with"
    api = settings.public_api_url
    click.echo(
        f"\nAdmin dashboard: {api}/admin/ (log in as {settings.admin_user!r}, password in {where})\n"
        f"Or over REST:\n"
        f"  curl -s -X POST {api}/api/v1/auth/token -H 'Content-Type: application/json' \\\n"
        f'       -d \'{{"username": "{settings.admin_user}", "password": "<password>"}}\'\n'
        f"Shop (customers sign up there): {api}/shop/\n"
        f"API docs: {api}/api/v1/docs/swagger\n"
        f"Courier app (log in as an agent, e.g. POST /agents): {api}/courier/\n"
    )


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@main.command()
@click.option("--embedded-broker/--no-embedded-broker", default=True)
@click.option(
    "--cluster",
    is_flag=True,
    help="make run-cluster: create the PostgreSQL database if missing; check the nodes' ports too",
)
@click.option(
    "--production",
    is_flag=True,
    help="make run-prod: also check the database and the external broker (implies --no-embedded-broker)",
)
@click.option(
    "--broker", "broker_only", is_flag=True, help="Only check that the external broker accepts our logins"
)
def preflight(embedded_broker: bool, production: bool, broker_only: bool, cluster: bool) -> None:
    """Check that the ports `make run` needs are free; say which variable moves each."""
    settings = _settings()
    checks = []
    if broker_only:
        checks = [preflight_checks.check_broker_reachable, preflight_checks.check_broker_logins]
    elif production:
        checks = [preflight_checks.check_database, preflight_checks.check_broker_configured]
        embedded_broker = False
    elif cluster:
        checks = [preflight_checks.ensure_database, preflight_checks.check_database]
        embedded_broker = False
    for check in checks:
        try:
            click.echo(check(settings))
        except (preflight_checks.PreflightError, broker_logins.MissingServiceSecret) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    if broker_only:
        return
    wanted = [
        ("the API", settings.api_host, settings.api_port, "ORDERBUS_API_PORT"),
        ("the Socket.IO bridge", settings.socketio_host, settings.socketio_port, "ORDERBUS_SOCKETIO_PORT"),
    ]
    if embedded_broker:
        wanted += [
            ("the MQTT broker", settings.broker_host, settings.broker_port, "ORDERBUS_BROKER_PORT"),
            ("MQTT over WebSocket", settings.broker_host, settings.broker_ws_port, "ORDERBUS_BROKER_WS_PORT"),
        ]
    if cluster:
        for node in cluster_nodes(settings):
            wanted += [
                (f"node {node.index}'s MQTT", node.host, node.mqtt_port, "ORDERBUS_BROKER_PORT"),
                (f"node {node.index}'s WebSocket", node.host, node.ws_port, "ORDERBUS_BROKER_WS_PORT"),
                (
                    f"node {node.index}'s NATS port",
                    node.host,
                    node.client_port,
                    "ORDERBUS_CLUSTER_CLIENT_PORT",
                ),
                (f"node {node.index}'s routes", node.host, node.route_port, "ORDERBUS_CLUSTER_ROUTE_PORT"),
                (
                    f"node {node.index}'s monitoring",
                    node.host,
                    node.monitor_port,
                    "ORDERBUS_CLUSTER_MONITOR_PORT",
                ),
            ]
    taken = [(what, host, port, var) for what, host, port, var in wanted if not port_free(host, port)]
    for what, host, port, var in taken:
        hint = ""
        if var == "ORDERBUS_BROKER_PORT":
            hint = " (is another MQTT broker, such as a system Mosquitto, running?)"
        click.echo(
            f"error: port {port} on {host}, wanted by {what}, is already in use{hint}.\n"
            f"       Pick another with {var}, e.g.: {var}={port + (10 if cluster else 1)} make "
            + ("run-cluster" if cluster else "run"),
            err=True,
        )
    if taken:
        sys.exit(1)
    click.echo("ports free: " + ", ".join(f"{host}:{port} ({what})" for what, host, port, _ in wanted))


@main.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=None,
    help="Then keep only the newest N backups of that directory (default ORDERBUS_BACKUP_KEEP; 0: all).",
)
def backup_command(target: Path | None, keep: int | None) -> None:
    """Back up the database while the service runs (SQLite: a copy; PostgreSQL: pg_dump -Fc).

    TARGET defaults to <data_dir>/backups/orderbus-<UTC time>.db (or .dump). The file is
    readable by its owner only (0600). --keep deletes the oldest backups named that way."""
    settings = _settings()
    target = target or backups.default_target(settings.data_dir, settings.database_url)
    keep = settings.backup_keep if keep is None else keep
    try:
        written = backups.backup(settings.database_url, target)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backed up the database to {written} ({written.stat().st_size} bytes)")
    if keep:
        for old in backups.prune(written.parent, keep):
            click.echo(f"deleted the old backup {old}")


@main.command("mqtt-files")
def mqtt_files() -> None:
    """Rewrite the broker's password and ACL files from the database (e.g. after a restore)."""
    settings = _settings()
    init_db(settings.database_url)
    with db.connection_context():
        changed = broker_logins.sync_files(settings)
    state = "rewritten" if changed else "already up to date"
    click.echo(f"{settings.mqtt_password_path} and {settings.mqtt_acl_path}: {state}")


@main.command("cluster-config")
def cluster_config() -> None:
    """Write the NATS nodes' configurations and users file into <data_dir>/nats/ (make run-cluster)."""
    settings = _settings()
    init_db(settings.database_url)
    try:
        with db.connection_context():
            written = cluster.write_configs(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for node in written:
        click.echo(f"node {node.index}: {node.conf} (MQTT {node.mqtt_url}, WebSocket {node.ws_url})")


@main.command("cluster-callout")
@click.option("--node", "node_index", type=int, required=True, help="the node (from 1) to connect to")
def cluster_callout(node_index: int) -> None:
    """Answer the NATS nodes' auth requests (make run-cluster runs one per node): the MQTT
    client id must be the username; logins from <data_dir>/nats/logins.json."""
    settings = _settings()
    if not 1 <= node_index <= settings.cluster_nodes:
        raise click.ClickException(f"--node {node_index}: the cluster has {settings.cluster_nodes} nodes")
    callout.run(settings, node_index)


@main.command("republish")
def republish() -> None:
    """Make the relay republish every order's state on its next connect (e.g. after a restore).

    Renews the database's epoch: the broker's retained marker no longer matches it, so the
    relay takes nothing the broker holds for current."""
    settings = _settings()
    init_db(settings.database_url)
    with db.connection_context(), db.atomic():
        RelayEpoch.update(epoch=secrets.token_hex(16)).where(RelayEpoch.id == 1).execute()
    click.echo("the relay republishes the state of every order and worklist when it next connects")


@main.command("seed-catalog")
def seed_catalog() -> None:
    """Fill an empty catalog with a few sample categories and items (make run does), so a
    newcomer's shop has something to order; a catalog that has anything is left alone."""
    settings = _settings()
    init_db(settings.database_url)
    with db.connection_context():
        made = catalog.seed(settings.currency)
    if made:
        click.echo("seeded the catalog with sample items (change it on the dashboard or over REST)")
    else:
        click.echo("the catalog has items already; left as it is")


@main.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "customer"]), default="customer")
@click.password_option()
def create_user(username: str, role: str, password: str) -> None:
    """Create an admin or customer account."""
    settings = _settings()
    init_db(settings.database_url)
    with db.connection_context(), db.atomic():
        if User.get_or_none(User.username == username):
            raise click.ClickException(f"user {username!r} exists")
        users.create_user(username, password, role)
    click.echo(f"created {role} {username!r}")


@main.command("set-password")
@click.argument("username")
@click.password_option()
def set_password(username: str, password: str) -> None:
    """Set a user's password (e.g. rotate an admin's): every session of that user is signed out,
    and an admin's dashboard broker logins go with them."""
    settings = _settings()
    init_db(settings.database_url)
    with db.connection_context():
        with db.atomic():
            user = User.get_or_none(User.username == username)
            if user is None:
                raise click.ClickException(f"no user {username!r}")
            User.update(password_hash=users.hash_password(password)).where(User.id == user.id).execute()
            users.revoke_all(user)
        broker_logins.sync_files(settings)
    click.echo(f"password of {username!r} changed; its sessions are signed out")
