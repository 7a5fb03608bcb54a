"""The real system for the client tests: broker, API (gunicorn) and relay as separate processes.

Unlike tests/test_processes.py (honcho, all or nothing), each process is its own
child in its own process group, so a test can stop the API and start it again
while the broker and relay keep running. Ephemeral ports, a fresh data dir, the
secured broker (agents log in with the credentials the service issues).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.rest import Api, ApiError, ApiUnreachable
from tests.mosquitto import Mosquitto
from tests.test_processes import BIN, ROOT, cli, free_port
from tests.tls import Certificates

COMMANDS = {
    "broker": [sys.executable, "-m", "broker"],
    "api": [
        str(BIN / "gunicorn"),
        "--config",
        "python:order_service.api.gunicorn_conf",
        "order_service.api.app:create_app()",
    ],
    "relay": [sys.executable, "-m", "order_service.relay"],
    "webhooks": [sys.executable, "-m", "order_service.webhooks"],
    "socketio": [sys.executable, "-m", "bridges.socketio"],
}


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a child we started (its own process group) and wait for it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


class System:
    def __init__(self, env: dict, tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.api_url = f"http://127.0.0.1:{env['ORDERBUS_API_PORT']}/api/v1"
        self.mqtt_url = f"mqtt://127.0.0.1:{env['ORDERBUS_BROKER_PORT']}"
        self.admin = Api(self.api_url)
        self.mosquitto: Mosquitto | None = None
        self._n = 0

    def start(self, name: str) -> None:
        log = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(
            COMMANDS[name],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if name == "api":
            self.wait_ready()

    def stop(self, name: str) -> None:
        stop_group(self.procs.pop(name))

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                Api(self.api_url, timeout=2).request("GET", "/readyz")
                return
            except (ApiUnreachable, ApiError):
                time.sleep(0.2)
        pytest.fail("API not ready:\n" + (self.tmp / "api.log").read_text())

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))

    # -- admin helpers ---------------------------------------------------------
    def make_agent(self) -> dict:
        self._n += 1
        username, password = f"rider{self._n}", f"rider-{self._n}-password"
        agent = self.admin.request(
            "POST", "/agents", {"name": f"Rider {self._n}", "username": username, "password": password}
        )
        return {**agent, "username": username, "password": password}

    def make_customer(self) -> dict:
        self._n += 1
        username, password = f"cust{self._n}", f"customer-{self._n}-pw"
        self.admin.request("POST", "/users", {"username": username, "password": password, "role": "customer"})
        return {"username": username, "password": password}

    def ready_order(self, status: str = "ready") -> dict:
        order = self.admin.request(
            "POST",
            "/orders",
            {
                "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
                "items": [{"name": "Tea", "quantity": 2, "unit_price_cents": 300}],
                "notes": "ring twice",
            },
        )
        for step in ("confirmed", "preparing", "ready"):
            order = self.admin.request("PATCH", f"/orders/{order['id']}/status", {"status": step})
            if step == status:
                break
        return order

    def assign(self, order_id: str, agent_id: str) -> dict:
        return self.admin.request("PUT", f"/orders/{order_id}/agent", {"agent_id": agent_id, "offer": False})


def make_system(
    tmp_path: Path,
    broker: str = "amqtt",
    tls: Certificates | None = None,
    sighup: bool = True,
    **extra_env: str,
) -> System:
    """The system on the embedded broker (``python -m broker``) or on a Mosquitto started from
    the repository's mosquitto.conf (tests/mosquitto.py); either way on ephemeral ports.

    With ``tls`` (Mosquitto only), the relay and the devices use its TLS listener: mqtts://,
    trusting the test's CA through ORDERBUS_MQTT_CA_FILE. With ``sighup=False`` the service
    does not signal Mosquitto after a login change (the test reloads it, as systemd would)."""
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ORDERBUS_DATA_DIR": str(data_dir),
        "ORDERBUS_API_PORT": str(free_port()),
        "ORDERBUS_BROKER_PORT": str(free_port()),
        "ORDERBUS_BROKER_WS_PORT": str(free_port()),
        "ORDERBUS_API_WORKERS": "2",
        **extra_env,
    }
    mosquitto = None
    if broker == "mosquitto":  # the service's files, Mosquitto's ports; SIGHUP on every login change
        mqtt_dir = data_dir / "mqtt"
        mosquitto = Mosquitto(data_dir, mqtt_dir / "passwd", mqtt_dir / "acl", tls=tls)
        env["ORDERBUS_BROKER_PORT"], env["ORDERBUS_BROKER_WS_PORT"] = (
            str(mosquitto.port),
            str(mosquitto.ws_port),
        )
        if sighup:
            env["ORDERBUS_MOSQUITTO_PID_FILE"] = str(mosquitto.pid_file)
        if tls is not None:  # the certificate names localhost: connect by that name
            env["ORDERBUS_MQTT_URL"] = env["ORDERBUS_PUBLIC_MQTT_URL"] = (
                f"mqtts://localhost:{mosquitto.tls_port}"
            )
            env["ORDERBUS_PUBLIC_MQTT_WS_URL"] = f"wss://localhost:{mosquitto.wss_port}/mqtt"
            env["ORDERBUS_MQTT_CA_FILE"] = str(tls.ca)
    for step in ("migrate", "bootstrap") if mosquitto else ("preflight", "migrate", "bootstrap"):
        result = cli(env, step)
        assert result.returncode == 0, result.stderr
    system = System(env, tmp_path)
    system.mosquitto = mosquitto
    if mosquitto:
        mosquitto.start()
    for name in ("relay", "api") if mosquitto else ("broker", "relay", "api"):
        system.start(name)
    password = (data_dir / "admin-password").read_text().strip()
    system.admin.login("admin", password)
    return system


@pytest.fixture
def live_system(tmp_path: Path, request: pytest.FixtureRequest):
    """Broker, relay and API as separate processes (heartbeat 2 s); stopped afterwards.

    The broker is the embedded one; a test parametrised with
    ``@pytest.mark.parametrize("live_system", ["amqtt", "mosquitto"], indirect=True)`` runs on both.
    """
    sys_ = make_system(
        tmp_path,
        getattr(request, "param", "amqtt"),
        ORDERBUS_PRESENCE_HEARTBEAT_SECONDS="2",
        ORDERBUS_PRESENCE_TIMEOUT_SECONDS="10",
    )
    try:
        yield sys_
    finally:
        for name in list(sys_.procs):
            sys_.stop(name)
        if sys_.mosquitto:
            sys_.mosquitto.stop()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
