"""The real system: broker, API (granian) and relay as separate processes.

Unlike the Procfile under honcho (all or nothing), each process is its own child in
its own process group, so a test can stop the API and start it again while the
broker and relay keep running. Ephemeral ports, a fresh data dir, the secured
broker (agents log in with the credentials the service issues).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clients.rest import Api, ApiError, ApiUnreachable
from harness.mosquitto import Mosquitto
from harness.processes import ROOT, child_env, cli, stop_group
from harness.tls import Certificates

COMMANDS = {
    "broker": [sys.executable, "-m", "broker"],
    "api": [sys.executable, "-m", "order_service.api_server"],
    "relay": [sys.executable, "-m", "order_service.relay"],
    "webhooks": [sys.executable, "-m", "order_service.webhooks"],
    "socketio": [sys.executable, "-m", "bridges.socketio"],
}


class NotReady(RuntimeError):
    """The API did not answer /readyz in time (the message carries its log)."""


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

    def close(self) -> None:
        """Stop every process still running, and the Mosquitto if the system has one."""
        for name in list(self.procs):
            self.stop(name)
        if self.mosquitto:
            self.mosquitto.stop()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                Api(self.api_url, timeout=2).request("GET", "/readyz")
                return
            except (ApiUnreachable, ApiError):
                time.sleep(0.2)
        raise NotReady("API not ready:\n" + (self.tmp / "api.log").read_text())

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
    the repository's mosquitto.conf (harness/mosquitto.py); either way every listener on a
    port of its own (:func:`~harness.processes.child_env`), never one of `make run`'s.

    With ``tls`` (Mosquitto only), the relay and the devices use its TLS listener: mqtts://,
    trusting the test's CA through ORDERBUS_MQTT_CA_FILE. With ``sighup=False`` the service
    does not signal Mosquitto after a login change (the caller reloads it, as systemd would)."""
    data_dir = tmp_path / "var"
    env = child_env(data_dir, ORDERBUS_API_WORKERS="2", **extra_env)
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
        if result.returncode != 0:
            raise RuntimeError(f"order_service {step} failed:\n{result.stderr}")
    system = System(env, tmp_path)
    system.mosquitto = mosquitto
    in_relay = env.get("ORDERBUS_BROKER_IN_RELAY", "").lower() in ("1", "true", "yes", "on")
    try:
        if mosquitto:
            mosquitto.start()
        for name in ("relay", "api") if mosquitto or in_relay else ("broker", "relay", "api"):
            system.start(name)
        password = (data_dir / "admin-password").read_text().strip()
        system.admin.login("admin", password)
    except BaseException:
        system.close()  # what did start (a Mosquitto, the broker) must not outlive a failed start
        raise
    return system
