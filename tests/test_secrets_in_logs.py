"""No password or broker secret in what the processes log or print.

Database and broker URLs may carry a password; every place that logs or prints one
goes through :func:`contract.link.masked_url`. Each test knows the secret values it
planted (non-empty, so a search for them can succeed) and sees the masked form where
the URL is shown, so it cannot pass by showing nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.link import masked_url
from tests.clients_system import stop_group
from tests.test_processes import BIN, ROOT, cli, free_port


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
