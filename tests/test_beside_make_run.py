"""The tests run beside a `make run`: with every default port of the system taken, the
harness and the Procfile under honcho still start the whole system and take an order.

The default ports are the settings' defaults (order_service/config.py) of the processes
`make run` starts (the Procfile). Each is bound and held here if it is free; one that is
taken already (a system Mosquitto on 1883, a `make run` beside the tests) is held by that
process, which serves as well. A port that can be neither fails the test with CI=true and
skips it otherwise.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import PORT_VARIABLES, ROOT, child_env, without_service_settings
from harness.system import make_system
from order_service.config import Settings
from order_service.ops.cli import port_free
from tests.mqtt_fixtures import Subscriber
from tests.test_processes import ORDER, honcho_system, http

pytestmark = pytest.mark.e2e

# Each process of the Procfile: the settings that name the TCP ports it listens on. The
# relay's only socket is the wake-up (a Unix socket in the data directory); the webhook
# bridge only connects out.
LISTENERS = {
    "broker": ("broker_port", "broker_ws_port"),
    "api": ("api_port",),
    "relay": (),
    "webhooks": (),
    "socketio": ("socketio_port",),
}
DEFAULTS = Settings.model_fields


def _default(setting: str) -> tuple[str, int]:
    host = DEFAULTS[f"{setting.split('_')[0]}_host"].default
    return host, DEFAULTS[setting].default


def _hold(host: str, port: int) -> socket.socket | None:
    """A socket listening on host:port; None if something else listens there already."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return sock


@pytest.fixture
def make_run_ports() -> Iterator[dict[str, tuple[str, int]]]:
    """Every default port of `make run`, held here or by whoever has it; {setting: (host, port)}."""
    ports = {setting: _default(setting) for settings in LISTENERS.values() for setting in settings}
    held, problems = [], []
    for setting, (host, port) in ports.items():
        try:
            sock = _hold(host, port)
        except OSError as exc:
            problems.append(f"{host}:{port} (ORDERBUS_{setting.upper()}): {exc.strerror or exc}")
            continue
        if sock is not None:
            held.append(sock)
    try:
        if problems:
            message = "cannot hold the default ports of make run: " + "; ".join(problems)
            if os.environ.get("CI") == "true":
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        # The positive control: no process could listen on them now (preflight's own check).
        free = [f"{host}:{port}" for host, port in ports.values() if port_free(host, port)]
        assert not free, f"held, yet free: {free}"
        yield ports
    finally:
        for sock in held:
            sock.close()


def _still_taken(ports: dict[str, tuple[str, int]]) -> None:
    released = [f"{host}:{port}" for host, port in ports.values() if port_free(host, port)]
    assert not released, f"{released} released by whoever held them while the system started: run again"


def test_every_listener_of_make_run_is_known():
    """The Procfile's processes and the port settings are those this module holds, and the
    harness gives each of those ports a variable: a new listener fails here until it has one."""
    procfile = (ROOT / "Procfile").read_text().splitlines()
    processes = {line.split(":", 1)[0] for line in procfile if line.strip() and not line.startswith("#")}
    assert processes == set(LISTENERS)
    settings = {name for names in LISTENERS.values() for name in names}
    # The cluster_*_port settings move make run-cluster's nodes (tests/test_cluster_ready.py).
    assert settings == {
        name for name in DEFAULTS if name.endswith("_port") and not name.startswith("cluster_")
    }
    assert set(PORT_VARIABLES) == {f"ORDERBUS_{name.upper()}" for name in settings}


def test_harness_system_starts_beside_make_run(make_run_ports, tmp_path: Path):
    """With make run's ports taken, make_system starts broker, relay and API on ports of their
    own; an order placed reaches a subscriber of that broker."""
    system = make_system(tmp_path)
    try:
        _still_taken(make_run_ports)
        ours = {int(system.env[name]) for name in PORT_VARIABLES}
        assert ours.isdisjoint(port for _, port in make_run_ports.values())
        login = system.admin.login("admin", (tmp_path / "var" / "admin-password").read_text().strip())
        port = int(system.env["ORDERBUS_BROKER_PORT"])
        sub = Subscriber("127.0.0.1", port, ("orders/#",), login=login["mqtt"]).start()
        try:
            order = system.admin.request("POST", "/orders", ORDER)
            message = sub.wait_for(lambda r: r.topic == "orders/new", timeout=10)
            assert message.json["order"]["id"] == order["id"]
        finally:
            sub.stop()
        assert not sub.contract_errors
        # The relay's wake-up socket (the API's only Unix socket): in this test's data directory.
        assert (tmp_path / "var" / "relay.sock").exists()
    finally:
        system.close()


def test_procfile_starts_beside_make_run(make_run_ports, tmp_path: Path):
    """With make run's ports taken, the whole Procfile under honcho (webhooks and Socket.IO
    too) passes preflight on ports of its own and takes an order."""
    env = child_env(tmp_path / "var", ORDERBUS_API_WORKERS="2")
    with honcho_system(env, tmp_path) as running:
        _still_taken(make_run_ports)
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        api = running["api"]
        status, body = http("POST", f"{api}/auth/token", {"username": "admin", "password": password})
        assert status == 200, body
        token = body["access_token"]
        status, order = http("POST", f"{api}/orders", ORDER, token)
        assert status == 201, order
        status, body = http("GET", f"{api}/orders/{order['id']}", token=token)
        assert status == 200 and body["id"] == order["id"]
        deadline = time.monotonic() + 15  # the bridge starts beside the API, maybe after it
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(env["ORDERBUS_SOCKETIO_PORT"])), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, running["log"].read_text()[-3000:]
                time.sleep(0.2)


def test_child_env_leaves_out_the_shells_service_settings(monkeypatch, tmp_path: Path):
    """What the harness starts never inherits a setting of the shell's `make run` (the load
    generator runs without this suite's conftest): only the tools' own variables pass."""
    monkeypatch.setenv("ORDERBUS_MQTT_URL", "mqtt://127.0.0.1:1883")
    monkeypatch.setenv("ORDERBUS_DATABASE_URL", "sqlite:///var/orderbus.db")
    monkeypatch.setenv("ORDERBUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    env = child_env(tmp_path, ORDERBUS_LOG_LEVEL="WARNING")
    assert "ORDERBUS_MQTT_URL" not in env and "ORDERBUS_DATABASE_URL" not in env
    assert env["ORDERBUS_TEST_POSTGRES_URL"] == os.environ["ORDERBUS_TEST_POSTGRES_URL"]
    assert env["ORDERBUS_DATA_DIR"] == str(tmp_path) and env["ORDERBUS_LOG_LEVEL"] == "WARNING"
    ports = [int(env[name]) for name in PORT_VARIABLES]
    assert len(set(ports)) == len(ports)
    assert set(ports).isdisjoint(_default(name)[1] for names in LISTENERS.values() for name in names)


def test_no_setting_of_the_shell_is_seen():
    """Run by the next test with settings exported (this suite alone never has any)."""
    assert without_service_settings(os.environ) == dict(os.environ)


def test_the_shells_make_run_settings_are_ignored():
    """`make test` in a shell that exported settings for its `make run` (README: Mosquitto as
    the broker): the tests do not see them."""
    env = {**os.environ, "ORDERBUS_MQTT_URL": "mqtt://127.0.0.1:1883", "ORDERBUS_API_PORT": "5000"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider"]
        + [f"{__file__}::test_no_setting_of_the_shell_is_seen"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "ignored (settings of this shell's make run): ORDERBUS_API_PORT, ORDERBUS_MQTT_URL" in done.stdout
