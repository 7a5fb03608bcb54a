"""The system as `make run` starts it: the Procfile's processes under honcho.

These tests run the real commands (python -m broker, the API server, the relay) as
child processes on ephemeral ports, then talk to them over HTTP and MQTT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.processes import BIN, ROOT, child_env, cli, free_port
from order_service.webhooks import model as webhooks
from tests.mqtt_fixtures import Subscriber
from tests.socketio_fixtures import NodeClient, node_client_ready
from tests.webhook_fixtures import Receiver

ORDER = {
    "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
    "items": [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}],
}

pytestmark = pytest.mark.e2e


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict:
    database = {} if database_url.startswith("sqlite:") else {"ORDERBUS_DATABASE_URL": database_url}
    for _ in range(3):  # a free port picked may be taken before the system binds it: pick again
        made = child_env(
            tmp_path / "var",
            ORDERBUS_WEBHOOK_POLL_SECONDS="30",  # the MQTT wake-up must do it
            ORDERBUS_WEBHOOKS_ALLOW_PRIVATE="true",  # the test's receiver is on 127.0.0.1
            ORDERBUS_API_WORKERS="2",
            **database,
        )
        if "already in use" not in cli(made, "preflight").stderr:
            break
    return made


@pytest.fixture
def system(env: dict, tmp_path: Path):
    """migrate, bootstrap, then every Procfile process under honcho, as `make run` does."""
    with honcho_system(env, tmp_path) as running:
        yield running


@contextlib.contextmanager
def honcho_system(env: dict, tmp_path: Path, procfile: str = "Procfile", preflight: tuple[str, ...] = ()):
    """The `system` fixture's body: a Procfile under honcho, stopped on exit."""
    checked = cli(env, "preflight", *preflight)
    assert checked.returncode == 0, checked.stderr
    assert cli(env, "migrate").returncode == 0
    boot = cli(env, "bootstrap")
    assert boot.returncode == 0, boot.stderr
    log = open(tmp_path / "honcho.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", str(ROOT / procfile)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{env['ORDERBUS_API_PORT']}/api/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if http("GET", f"{api}/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "honcho.log").read_text()
        time.sleep(0.2)
    else:
        pytest.fail("API not ready:\n" + (tmp_path / "honcho.log").read_text())
    try:
        yield {"api": api, "boot": boot.stdout, "proc": proc, "log": tmp_path / "honcho.log"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def test_make_run_processes_serve_rest_to_mqtt(system, env):
    """Under honcho, a POST to the API reaches a subscriber of the broker within seconds."""
    password = (Path(env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    assert "admin-password" in system["boot"]
    status, body = http("POST", f"{system['api']}/auth/token", {"username": "admin", "password": password})
    assert status == 200, body
    token = body["access_token"]

    # The admin's dashboard login: the broker under `make run` refuses anonymous clients.
    sub = Subscriber("127.0.0.1", int(env["ORDERBUS_BROKER_PORT"]), ("orders/#",), login=body["mqtt"]).start()
    try:
        order = {
            "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
            "items": [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}],
        }
        status, created = http("POST", f"{system['api']}/orders", order, token)
        assert status == 201, created
        message = sub.wait_for(lambda r: r.topic == "orders/new", timeout=10)
        assert message.json["order"]["id"] == created["id"]
        status, changed = http(
            "PATCH", f"{system['api']}/orders/{created['id']}/status", {"status": "confirmed"}, token
        )
        assert status == 200
        sub.wait_for(lambda r: r.topic == f"orders/{created['id']}/status" and r.version == 2, timeout=10)
    finally:
        sub.stop()
    assert not sub.contract_errors


def test_preflight_names_the_taken_port_and_its_variable(env):
    """A taken broker port is reported with the variable that moves it, without a traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {**env, "ORDERBUS_BROKER_PORT": str(holder.getsockname()[1])}
        result = cli(env, "preflight")
    assert result.returncode == 1
    assert env["ORDERBUS_BROKER_PORT"] in result.stderr
    assert "ORDERBUS_BROKER_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_configuration_is_one_clear_line(env):
    """A malformed variable stops the command with its name, not a traceback."""
    result = cli({**env, "ORDERBUS_API_PORT": "http"}, "migrate")
    assert result.returncode != 0
    assert "api_port" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_latency_probe_reports_receipts(system, env):
    """`python -m clients.latency` places orders and reports POST -> orders/new latency."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.latency",
            "--json",
            "-n",
            "5",
            "--warmup",
            "1",
            "--api",
            system["api"],
            "--mqtt",
            f"mqtt://127.0.0.1:{env['ORDERBUS_BROKER_PORT']}",
            "--password-file",
            str(Path(env["ORDERBUS_DATA_DIR"]) / "admin-password"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["orders"] == 5
    assert 0 < report["post_to_receipt_ms"]["p50"] <= report["post_to_receipt_ms"]["max"]


def test_latency_probe_explains_a_missing_system(env):
    """Pointed at nothing, the probe says what is wrong in one line."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.latency",
            "--password",
            "x",
            "--api",
            f"http://127.0.0.1:{free_port()}/api/v1",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is `make run` running?" in result.stderr
    assert "Traceback" not in result.stderr


def test_concurrent_writers_lose_nothing(system, env):
    """Eight clients posting at once through two API workers: every order is 201 and reaches MQTT."""
    from concurrent.futures import ThreadPoolExecutor

    password = (Path(env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    login = http("POST", f"{system['api']}/auth/token", {"username": "admin", "password": password})[1]
    token = login["access_token"]
    sub = Subscriber(
        "127.0.0.1", int(env["ORDERBUS_BROKER_PORT"]), ("orders/new",), login=login["mqtt"]
    ).start()
    order = {
        "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
        "items": [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}],
    }

    def place(_: int) -> tuple[int, dict]:
        return http("POST", f"{system['api']}/orders", order, token)

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(place, range(200)))
        assert [status for status, _ in results] == [201] * 200, [b for s, b in results if s != 201][:3]
        ids = {body["id"] for _, body in results}
        assert len(ids) == 200
        got: set[str] = set()
        deadline = time.monotonic() + 30
        while ids - got and time.monotonic() < deadline:
            got |= {r.json["order"]["id"] for r in sub.settle(quiet=0.5, timeout=5) if r.payload}
        assert ids <= got, f"{len(ids - got)} orders never reached orders/new"
    finally:
        sub.stop()
    assert not sub.contract_errors
    assert "database is locked" not in system["log"].read_text()


def test_make_run_bridges_deliver_a_signed_webhook_and_serve_socketio(system, env):
    """Under honcho the webhook bridge, woken over MQTT, POSTs a signed event; Socket.IO is up
    and, with ORDERBUS_API_URL left to its default, checks a socket's token with the API."""
    node_client_ready()
    password = (Path(env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    status, body = http("POST", f"{system['api']}/auth/token", {"username": "admin", "password": password})
    token = body["access_token"]
    receiver = Receiver()
    try:
        status, hook = http(
            "POST", f"{system['api']}/webhooks", {"url": receiver.url, "events": ["*"]}, token
        )
        assert status == 201, hook
        status, created = http("POST", f"{system['api']}/orders", ORDER, token)
        assert status == 201, created
        hit = receiver.delivered(1, timeout=15)[0]
        assert hit.json["order"]["id"] == created["id"]
        assert webhooks.verify(hook["secret"], hit.body, hit.headers[webhooks.SIGNATURE_HEADER])
    finally:
        receiver.close()
    health = f"http://127.0.0.1:{env['ORDERBUS_SOCKETIO_PORT']}/healthz"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                assert response.status == 200
                break
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, system["log"].read_text()
            time.sleep(0.2)
    socket = NodeClient(f"http://127.0.0.1:{env['ORDERBUS_SOCKETIO_PORT']}", token)
    try:
        socket.connected()
        status, created = http("POST", f"{system['api']}/orders", ORDER, token)
        assert status == 201, created
        assert socket.event("order:new", orderId=created["id"])["status"] == "placed"
    finally:
        socket.close()


def _all_events(api: str, token: str) -> list[dict]:
    events, cursor = [], 0
    while True:
        page = http("GET", f"{api}/events?after={cursor}&limit=500", token=token)[1]
        events += page["events"]
        if not page["events"]:
            return events
        cursor = page["next_cursor"]


def test_four_workers_updating_one_order_lose_nothing(env, tmp_path):
    """Four API workers, eight clients reassigning one order with If-Match: every 200 is a new
    version, versions have no gaps and no repeats, the event log and MQTT carry each version once."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**env, "ORDERBUS_API_WORKERS": "4"}
    with honcho_system(env, tmp_path) as system:
        api = system["api"]
        password = (Path(env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
        login = http("POST", f"{api}/auth/token", {"username": "admin", "password": password})[1]
        token = login["access_token"]
        agents = []
        for n in range(2):
            body = {"name": f"Rider {n}", "username": f"rider{n}", "password": "rider-password"}
            agents.append(http("POST", f"{api}/agents", body, token)[1]["id"])
        status, order = http("POST", f"{api}/orders", ORDER, token)
        assert status == 201
        oid = order["id"]
        assert http("PATCH", f"{api}/orders/{oid}/status", {"status": "confirmed"}, token)[0] == 200
        sub = Subscriber(
            "127.0.0.1", int(env["ORDERBUS_BROKER_PORT"]), (f"orders/{oid}/status",), login=login["mqtt"]
        ).start()

        def reassign(_: int) -> tuple[int, int]:
            """Read the order, move it to the other agent if it is unchanged meanwhile."""
            current = http("GET", f"{api}/orders/{oid}", token=token)[1]
            other = agents[1] if current["agent_id"] == agents[0] else agents[0]
            request = urllib.request.Request(
                f"{api}/orders/{oid}/agent",
                data=json.dumps({"agent_id": other, "offer": False}).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {token}",
                    "If-Match": str(current["version"]),
                },
                method="PUT",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())["version"]
            except urllib.error.HTTPError as exc:
                return exc.code, current["version"]

        try:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(reassign, range(120)))
            assert {status for status, _ in results} <= {200, 412}, results
            won = sorted(version for status, version in results if status == 200)
            final = http("GET", f"{api}/orders/{oid}", token=token)[1]["version"]
            assert won, "no update succeeded"
            assert won == list(range(3, final + 1)), "a version was lost or given twice"

            events = [
                e["payload"]["order"]["version"]
                for e in _all_events(api, token)
                if e["topic"] == f"orders/{oid}/status"
            ]
            assert events == list(range(1, final + 1)), "the event log lost, repeated or reordered one"
            sub.wait_for(lambda r: r.version == final, timeout=15)  # the rows go out in order: all before it
            first_seen: list[int] = []
            for r in sub.seen:
                if r.version not in first_seen:
                    first_seen.append(r.version)
            assert [v for v in first_seen if v >= 2] == list(range(2, final + 1))
        finally:
            sub.stop()
        assert not sub.contract_errors
        print(f"4 workers: {len(won)} of {len(results)} conditional updates won; final version {final}")


def _make(env: dict, target: str) -> str:
    """``make <target>`` from the repository, as README says, with this system's environment."""
    done = subprocess.run(
        ["make", "--no-print-directory", f"VENV={BIN.parent}", target],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _wait(condition, what: str, log: Path, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    return value


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _broker_pid(env: dict) -> int | None:
    path = Path(env["ORDERBUS_DATA_DIR"]) / "broker.pid"
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_make_run_keeps_the_api_and_relay_when_the_broker_stops(system, env):
    """README's demo under `make run`: the broker stopped (`make broker-stop`, or killed), the
    API goes on accepting orders (201) and the relay goes on, so those orders reach a
    subscriber once the broker is back (`make broker-start`, or by itself after a kill).
    honcho used to stop every process as soon as the broker exited."""
    port, log = int(env["ORDERBUS_BROKER_PORT"]), system["log"]
    password = (Path(env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    status, body = http("POST", f"{system['api']}/auth/token", {"username": "admin", "password": password})
    token, login = body["access_token"], body["mqtt"]

    def outage(stop, start) -> list[str]:
        """Stop the broker, post two orders, start it; the orders' ids."""
        pid = _wait(lambda: _broker_pid(env), "the broker's pid file", log)
        stop(pid)
        _wait(lambda: not _listening(port), "the broker stopped", log)
        placed = []
        for _ in range(2):
            status, created = http("POST", f"{system['api']}/orders", ORDER, token)
            assert status == 201, created
            placed.append(created["id"])
        assert system["proc"].poll() is None, log.read_text()
        start()
        _wait(lambda: _listening(port), "the broker back", log)
        late = Subscriber("127.0.0.1", port, ("orders/+/status",), login=login).start()
        try:
            for order_id in placed:  # published by the relay that ran on, retained
                late.wait_for(lambda r, o=order_id: r.topic == f"orders/{o}/status", timeout=20)
        finally:
            late.stop()
        return placed

    # As README says: make broker-stop keeps it down until make broker-start.
    outage(lambda _pid: _make(env, "broker-stop"), lambda: _make(env, "broker-start"))
    # Killed (a crash): it comes back by itself.
    outage(lambda pid: os.kill(pid, signal.SIGKILL), lambda: None)
    assert system["proc"].poll() is None
