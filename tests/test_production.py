"""`make run-prod` as a new user runs it: Procfile.production against Mosquitto.

Mosquitto is started from the repository's mosquitto.conf on ephemeral ports
(harness/mosquitto.py), never the system one. The database is PostgreSQL: the test
runs in the PostgreSQL pass only (the SQLite pass covers two relays on a file lock
in tests/test_relay_failover.py). The first `make run-prod`, with Mosquitto not yet started, writes the
broker's files and stops with instructions; the second runs the whole system:
four API workers, two relays (one active, one standby), webhooks and Socket.IO.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.mosquitto import Mosquitto
from harness.processes import ROOT, child_env, cli, stop_group
from order_service.config import load_settings
from order_service.webhooks import model as webhooks
from tests.conftest import BACKEND
from tests.mqtt_fixtures import Subscriber
from tests.test_processes import ORDER, http
from tests.webhook_fixtures import Receiver

pytestmark = pytest.mark.e2e
VENV = Path(sys.prefix)


def make_run_prod(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["make", "--no-print-directory", f"VENV={VENV}", "run-prod"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_log(log: Path, pattern: str, timeout: float = 20.0, after: int = 0) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        match = re.compile(pattern).search(log.read_text(errors="replace"), after)
        if match:
            return match
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.1)


@pytest.fixture
def prod_env(tmp_path: Path, database_url: str) -> dict:
    data_dir = tmp_path / "var"
    return child_env(
        data_dir,
        ORDERBUS_DATABASE_URL=database_url,
        ORDERBUS_MOSQUITTO_PID_FILE=str(data_dir / "mosquitto" / "mosquitto.pid"),
        ORDERBUS_WEBHOOK_POLL_SECONDS="30",  # the MQTT wake-up must do it
        ORDERBUS_WEBHOOKS_ALLOW_PRIVATE="true",  # the test's receiver is on 127.0.0.1
    )


@pytest.mark.skipif(BACKEND != "postgresql", reason="the production path runs on PostgreSQL")
def test_make_run_prod_on_mosquitto(prod_env: dict, tmp_path: Path):
    """First run: files written, a clear message on what Mosquitto needs. With Mosquitto pointed
    at them: REST reaches MQTT subscribers and a signed webhook; one relay active, one standby;
    kill -9 of the active one and the standby publishes within seconds."""
    settings = load_settings({"data_dir": Path(prod_env["ORDERBUS_DATA_DIR"])})
    mosquitto = Mosquitto(
        Path(prod_env["ORDERBUS_DATA_DIR"]), settings.mqtt_password_path, settings.mqtt_acl_path
    )
    env = {
        **prod_env,
        "ORDERBUS_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
        "ORDERBUS_PUBLIC_MQTT_WS_URL": f"ws://127.0.0.1:{mosquitto.ws_port}/mqtt",
    }
    first_log = tmp_path / "first.log"
    first = make_run_prod(env, first_log)
    assert first.wait(120) != 0
    text = first_log.read_text()
    assert f"password_file {settings.mqtt_password_path.resolve()}" in text, text
    assert "cannot reach the MQTT broker" in text and "Traceback" not in text, text
    assert settings.mqtt_password_path.exists() and settings.mqtt_acl_path.exists()

    mosquitto.start()
    log = tmp_path / "run-prod.log"
    proc = make_run_prod(env, log)
    receiver = Receiver()
    sub = None
    try:
        wait_log(log, r"accepts the relay's and the bridges' logins")
        active = wait_log(log, r"(relay\d)\.1 +\| .*relay active: this relay \(pid (\d+)\)")
        standby = wait_log(log, r"(relay\d)\.1 +\| .*relay standby")
        assert active.group(1) != standby.group(1)
        api = f"http://127.0.0.1:{env['ORDERBUS_API_PORT']}/api/v1"
        deadline = time.monotonic() + 30
        while http_status(f"{api}/readyz") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        # /readyz answers once one worker is up; the other three log their boot soon after.
        while len(re.findall(r"Started worker-\d+", log.read_text())) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        assert len(re.findall(r"Started worker-\d+", log.read_text())) == 4
        dashboard = f"http://127.0.0.1:{env['ORDERBUS_API_PORT']}/admin"
        assert http_status(f"{dashboard}/") == 200 and http_status(f"{dashboard}/vendor/mqtt.esm.js") == 200

        password = (settings.data_dir / "admin-password").read_text().strip()
        login = http("POST", f"{api}/auth/token", {"username": "admin", "password": password})[1]
        token = login["access_token"]
        sub = Subscriber("127.0.0.1", mosquitto.port, ("orders/#",), login=login["mqtt"]).start()
        status, hook = http("POST", f"{api}/webhooks", {"url": receiver.url, "events": ["*"]}, token)
        assert status == 201, hook
        status, created = http("POST", f"{api}/orders", ORDER, token)
        assert status == 201, created
        sub.wait_for(lambda r: r.topic == "orders/new" and r.json["order"]["id"] == created["id"], timeout=10)
        hit = receiver.delivered(1, timeout=15)[0]
        assert webhooks.verify(hook["secret"], hit.body, hit.headers[webhooks.SIGNATURE_HEADER])
        assert http_status(f"http://127.0.0.1:{env['ORDERBUS_SOCKETIO_PORT']}/healthz") == 200

        os.kill(int(active.group(2)), signal.SIGKILL)
        killed_at = time.monotonic()
        wait_log(log, rf"{standby.group(1)}\.1 +\| .*relay connected", after=standby.end())
        took_over = time.monotonic() - killed_at
        status, changed = http(
            "PATCH", f"{api}/orders/{created['id']}/status", {"status": "confirmed"}, token
        )
        assert status == 200
        sub.wait_for(lambda r: r.topic == f"orders/{created['id']}/status" and r.version == 2, timeout=10)
        wait_log(log, rf"{active.group(1)}\.1 +\| .*relay standby", after=active.end())  # restarted
        assert proc.poll() is None, "honcho stopped the system when a relay died"
        print(f"run-prod on Mosquitto: the standby relay took over {took_over:.2f} s after kill -9")
    finally:
        receiver.close()
        if sub is not None:
            sub.stop()
        stop_group(proc)
        mosquitto.stop()
    assert not sub.contract_errors


def test_preflight_refuses_a_broker_that_lets_any_password_in(prod_env: dict, broker):
    """A broker not reading the service's files (here the embedded one in its open dev mode)
    accepts the relay's login, but also a wrong password: `preflight --broker` refuses to go on."""
    env = {**prod_env, "ORDERBUS_MQTT_URL": f"mqtt://{broker.host}:{broker.port}"}
    for step in ("migrate", "bootstrap"):
        assert cli(env, step).returncode == 0
    result = cli(env, "preflight", "--broker")
    assert result.returncode == 1, result.stdout
    assert "accepted a wrong password" in result.stderr and "Traceback" not in result.stderr
    assert str(Path(env["ORDERBUS_DATA_DIR"]).resolve() / "mqtt" / "passwd") in result.stderr


@pytest.mark.security
@pytest.mark.parametrize("bound", [True, False], ids=["mosquitto.conf", "without-use_username_as_clientid"])
def test_preflight_refuses_a_broker_that_lets_a_login_take_another_client_id(prod_env: dict, bound: bool):
    """Mosquitto from the repository's mosquitto.conf passes `preflight --broker`; the same without
    `use_username_as_clientid` (any device could knock the relay off) is refused."""
    settings = load_settings({"data_dir": Path(prod_env["ORDERBUS_DATA_DIR"])})
    mosquitto = Mosquitto(
        Path(prod_env["ORDERBUS_DATA_DIR"]), settings.mqtt_password_path, settings.mqtt_acl_path
    )
    if not bound:
        conf = mosquitto.conf_path.read_text()
        assert "use_username_as_clientid true" in conf
        mosquitto.conf_path.write_text(conf.replace("use_username_as_clientid true", ""))
    env = {**prod_env, "ORDERBUS_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}"}
    for step in ("migrate", "bootstrap"):
        assert cli(env, step).returncode == 0
    mosquitto.start()
    try:
        result = cli(env, "preflight", "--broker")
    finally:
        mosquitto.stop()
    assert "Traceback" not in result.stderr
    if bound:
        assert result.returncode == 0, result.stderr
        assert "binds client ids to logins" in result.stdout
    else:
        assert result.returncode == 1, result.stdout
        assert "use_username_as_clientid true" in result.stderr


def http_status(url: str) -> int:
    """The status a GET of ``url`` answers; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
