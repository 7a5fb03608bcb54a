"""No password or broker secret in what the processes log or print.

Database and broker URLs may carry a password; every place that logs or prints one
goes through :func:`contract.link.masked_url`. Each test knows the secret values it
planted (non-empty, so a search for them can succeed) and sees the masked form where
the URL is shown, so it cannot pass by showing nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clients.rest import Api
from contract.link import masked_url
from harness.processes import BIN, ROOT, cli, free_port, stop_group
from harness.system import make_system
from tests.conftest import BACKEND
from tests.test_clients_agent import AgentProcess, ids, worklist
from tests.webhook_fixtures import Receiver


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://orderbus:s3cr%40t@db:5432/orderbus", "postgresql://orderbus:***@db:5432/orderbus"),
        ("postgresql://:s3cret@db/orderbus", "postgresql://:***@db/orderbus"),
        ("postgresql://db/orderbus?sslmode=require&password=s3cret", "postgresql://db/orderbus?sslmode=require&password=***"),
        ("mqtts://orderbus-service:s3cret@broker:8883", "mqtts://orderbus-service:***@broker:8883"),
        ("postgresql://orderbus@db/orderbus", "postgresql://orderbus@db/orderbus"),
        ("sqlite:///var/orderbus.db", "sqlite:///var/orderbus.db"),
        ("http://[::1", "***"),
    ],
)  # fmt: skip
def test_masked_url_hides_only_the_password(url: str, shown: str):
    assert masked_url(url) == shown


def unreachable_postgres(password: str) -> str:
    """A PostgreSQL URL with a password, at a port nothing listens on."""
    return f"postgresql://orderbus:{password}@127.0.0.1:{free_port()}/orderbus"


def run_until(command: list[str], env: dict, log: Path, pattern: str, timeout: float = 20) -> str:
    """Start ``command``, wait until its output matches ``pattern``, stop it; return the output."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, log.read_text()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{log.read_text()}"
            time.sleep(0.05)
    finally:
        stop_group(proc)
    return log.read_text()


def wait_for_text(log: Path, text: str, occurrences: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < occurrences:
        assert time.monotonic() < deadline, (
            f"{log.name}: {text!r} not {occurrences} times:\n{log.read_text()}"
        )
        time.sleep(0.05)


def test_relay_logs_its_database_and_broker_without_their_passwords(tmp_path: Path):
    """The relay's first line names the database and the broker: masked."""
    db_password, broker_secret = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ORDERBUS_DATA_DIR": str(tmp_path / "var"),
        "ORDERBUS_DATABASE_URL": unreachable_postgres(db_password),
        "ORDERBUS_MQTT_URL": f"mqtt://orderbus-service:{broker_secret}@127.0.0.1:{free_port()}",
    }
    text = run_until(
        [sys.executable, "-m", "order_service.relay"],
        env,
        tmp_path / "relay.log",
        r"relay starting.*\n(.*\n)+",
    )
    assert "database postgresql://orderbus:***@127.0.0.1" in text, text
    assert db_password not in text and broker_secret not in text, text


def test_commands_name_the_database_without_its_password(tmp_path: Path):
    """preflight, backup and a bad setting: each message about the database, masked."""
    password = secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "ORDERBUS_DATA_DIR": str(tmp_path / "var"),
        "ORDERBUS_DATABASE_URL": unreachable_postgres(password),
        "ORDERBUS_MQTT_URL": "mqtt://127.0.0.1:1",
    }
    preflight = cli(env, "preflight", "--production")
    assert preflight.returncode == 1 and "cannot reach the database at postgresql://orderbus:***@" in (
        preflight.stderr
    ), preflight.stderr
    backup = cli(env, "backup")
    assert backup.returncode != 0 and "pg_dump failed" in backup.stderr, backup.stderr
    bad_setting = cli({**env, "ORDERBUS_MQTT_URL": f"gopher://x:{password}@h"}, "migrate")
    assert bad_setting.returncode != 0 and "ORDERBUS_MQTT_URL" in bad_setting.stderr, bad_setting.stderr
    for result in (preflight, backup, bad_setting):
        assert password not in result.stdout + result.stderr


def _with_password(url: str, password: str) -> str:
    """The test's PostgreSQL URL with a password in it (the server's trust authentication ignores it)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5432}").geturl()


@pytest.mark.e2e
def test_a_full_run_logs_no_password_and_no_broker_secret(tmp_path: Path, database_url: str):
    """Every process of the system on Mosquitto (API, relay, webhook worker, Socket.IO bridge, an
    agent device) and the operator's commands, through an order's life, a webhook and a broker
    outage: their logs hold none of the secrets the run used. On PostgreSQL the database URL
    carries a password; on SQLite the secrets are the broker's and the logins'."""
    db_password = secrets.token_urlsafe(16)
    database = (
        {} if BACKEND == "sqlite" else {"ORDERBUS_DATABASE_URL": _with_password(database_url, db_password)}
    )
    system = make_system(
        tmp_path,
        "mosquitto",
        ORDERBUS_SOCKETIO_PORT=str(free_port()),
        ORDERBUS_WEBHOOK_POLL_SECONDS="1",
        ORDERBUS_WEBHOOKS_ALLOW_PRIVATE="true",  # the receiver is on 127.0.0.1
        ORDERBUS_API_ACCESS_LOG="true",  # request lines too (the positive control below reads them)
        **database,
    )
    data_dir = Path(system.env["ORDERBUS_DATA_DIR"])
    receiver = Receiver()
    outputs: list[str] = []
    agent = None
    try:
        system.start("webhooks")
        system.start("socketio")
        rider = system.make_agent()
        admin_login = Api(system.api_url).login("admin", (data_dir / "admin-password").read_text().strip())
        state = tmp_path / "agent-state"
        state.mkdir()
        agent = AgentProcess(system, rider, state)
        agent.wait_for(worklist)
        hook = system.admin.request("POST", "/webhooks", {"url": receiver.url, "events": ["*"]})
        order = system.ready_order("confirmed")
        system.assign(order["id"], rider["id"])
        agent.wait_for(lambda line: worklist(line) and order["id"] in ids(line), timeout=10)
        receiver.delivered(1, timeout=15)
        # an outage of the broker: every process says so, and reconnects
        system.mosquitto.stop()
        wait_for_text(tmp_path / "relay.log", "broker unavailable")
        system.mosquitto.start()
        wait_for_text(tmp_path / "relay.log", "relay connected", occurrences=2)
        for command in (["migrate"], ["mqtt-files"], ["backup"]):
            result = cli(system.env, *command)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
    finally:
        receiver.close()
        if agent is not None:
            stop_group(agent.proc)
            agent.err.close()
        for name in list(system.procs):
            system.stop(name)
        system.mosquitto.stop()  # flushes its log

    planted = {
        "the relay's broker secret": (data_dir / "mqtt" / "service-secret").read_text().strip(),
        "the Socket.IO bridge's broker secret": (data_dir / "mqtt" / "socketio-secret").read_text().strip(),
        "the webhook worker's broker secret": (data_dir / "mqtt" / "webhooks-secret").read_text().strip(),
        "the agent device's broker secret": json.loads((state / "mqtt.json").read_text())["password"],
        "the admin dashboard's broker secret": admin_login["mqtt"]["password"],
        "the admin's password": (data_dir / "admin-password").read_text().strip(),
        "the agent's password": rider["password"],
        "the admin's bearer token": admin_login["access_token"],
        "the webhook's signing secret": hook["secret"],
    }
    if BACKEND == "postgresql":
        planted["the database password"] = db_password
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    logs["mosquitto.log"] = system.mosquitto.log()
    logs["agent stderr"] = next(tmp_path.glob("agent-*.err")).read_text()
    logs["commands"] = "\n".join(outputs)
    # positive controls: every secret is a real value, and the logs are the run's, searchable
    assert all(len(value) >= 8 for value in planted.values()), planted
    assert {"api.log", "relay.log", "webhooks.log", "socketio.log"} <= set(logs)
    assert order["id"] in logs["api.log"] + logs["relay.log"] or "POST /api/v1/orders" in logs["api.log"]
    assert "broker unavailable" in logs["relay.log"] and "relay starting: database" in logs["relay.log"]
    if BACKEND == "postgresql":
        assert ":***@" in logs["relay.log"]  # the URL is shown, masked
    found = [
        f"{what} in {name}" for what, value in planted.items() for name, text in logs.items() if value in text
    ]
    assert not found, found
