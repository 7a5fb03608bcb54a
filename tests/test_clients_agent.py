"""The agent device (`python -m clients.agent --json`) against the real broker, relay and API."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.agent.device import AgentDevice
from clients.agent.state import StateDir
from clients.rest import Api
from harness.processes import ROOT, stop_group
from harness.system import System, make_system
from tests.mqtt_fixtures import Subscriber

pytestmark = pytest.mark.e2e


class AgentProcess:
    """`python -m clients.agent --json` as a child; its JSON lines go to a queue."""

    def __init__(self, system: System, agent: dict, state_dir: Path, **env: str) -> None:
        self.lines: queue.Queue[dict] = queue.Queue()
        self.err = open(state_dir.parent / f"agent-{agent['username']}.err", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clients.agent",
                "--json",
                "--api",
                system.api_url,
                "--user",
                agent["username"],
                "--state-dir",
                str(state_dir),
            ],
            env={**system.env, "ORDERBUS_AGENT_PASSWORD": agent["password"], **env},
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if match(line):
                return line
        raise AssertionError(f"no matching line within {timeout} s (exit code {self.proc.poll()})")

    def kill(self) -> None:
        stop_group(self.proc, signal.SIGKILL)


@pytest.fixture
def agents(tmp_path: Path):
    started: list[AgentProcess] = []

    def start(system: System, agent: dict, **env: str) -> AgentProcess:
        state = tmp_path / f"state-{agent['username']}"
        state.mkdir(exist_ok=True)
        process = AgentProcess(system, agent, state, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_group(process.proc)
        for stream in (process.proc.stdin, process.proc.stdout, process.err):
            try:
                stream.close()
            except OSError:
                pass


def worklist(line: dict) -> bool:
    return line["event"] == "worklist"


def ids(line: dict) -> list[str]:
    return sorted(o["id"] for o in line["orders"])


@pytest.mark.parametrize("live_system", ["amqtt", "mosquitto"], indirect=True)  # the production broker too
def test_new_assignment_shows_within_a_second_then_reassign_and_cancel_remove_it(live_system, agents):
    system = live_system
    rider, other = system.make_agent(), system.make_agent()
    device = agents(system, rider)
    device.wait_for(worklist)  # the synced state on connect (empty)
    first, second = system.ready_order("confirmed"), system.ready_order("confirmed")

    sent = time.monotonic()
    system.assign(first["id"], rider["id"])
    line = device.wait_for(lambda x: worklist(x) and first["id"] in ids(x), timeout=5)
    assert time.monotonic() - sent < 1.0
    assert line["badge"] == 1
    shown = line["orders"][0]
    assert shown["new"] and shown["customer"]["address"] == "1 Main St" and shown["notes"] == "ring twice"
    assert shown["items"][0]["name"] == "Tea"

    system.assign(second["id"], rider["id"])
    line = device.wait_for(lambda x: worklist(x) and second["id"] in ids(x))
    assert line["badge"] == 2

    system.assign(first["id"], other["id"])  # reassigned away: removed, and announced
    line = device.wait_for(lambda x: worklist(x) and first["id"] not in ids(x))
    assert ids(line) == [second["id"]] and line["badge"] == 1
    notice = device.wait_for(lambda x: x["event"] == "notice")
    assert (notice["order_id"], notice["kind"], notice["customer"]) == (first["id"], "reassigned", "Ada")

    system.admin.request("PATCH", f"/orders/{second['id']}/status", {"status": "cancelled"})
    line = device.wait_for(lambda x: worklist(x) and not x["orders"])
    assert line["badge"] == 0
    notice = device.wait_for(lambda x: x["event"] == "notice")
    assert (notice["order_id"], notice["kind"], notice["status"]) == (second["id"], "cancelled", "cancelled")


@pytest.mark.parametrize("live_system", ["amqtt", "mosquitto"], indirect=True)  # the production broker too
def test_restart_after_offline_shows_exactly_the_live_assignments_as_new(live_system, agents):
    system = live_system
    rider = system.make_agent()
    device = agents(system, rider)
    device.wait_for(worklist)
    device.kill()

    orders = [system.ready_order("confirmed") for _ in range(3)]
    for order in orders:
        system.assign(order["id"], rider["id"])
    system.admin.request("PATCH", f"/orders/{orders[1]['id']}/status", {"status": "cancelled"})

    device = agents(system, rider)
    live = sorted([orders[0]["id"], orders[2]["id"]])
    line = device.wait_for(lambda x: worklist(x) and ids(x) == live)
    assert line["badge"] == 2
    assert all(o["new"] for o in line["orders"])
    device.send("seen")
    assert device.wait_for(worklist)["badge"] == 0

    # Cancelled while the device was off, after it had seen the order: announced when it starts.
    device.kill()
    system.admin.request("PATCH", f"/orders/{orders[0]['id']}/status", {"status": "cancelled"})
    device = agents(system, rider)
    notice = device.wait_for(lambda x: x["event"] == "notice", timeout=15)
    assert (notice["order_id"], notice["kind"]) == (orders[0]["id"], "cancelled")
    device.send("seen")
    assert device.wait_for(worklist)["badge"] == 0


def test_action_taken_while_api_is_down_is_replayed_once(live_system, agents):
    system = live_system
    rider = system.make_agent()
    order = system.ready_order("ready")
    system.assign(order["id"], rider["id"])
    device = agents(system, rider)
    device.wait_for(lambda x: worklist(x) and ids(x) == [order["id"]])

    system.stop("api")
    device.send(f"pickup {order['id']}")
    assert device.wait_for(lambda x: x["event"] == "queued")["pending"] == 1
    system.start("api")
    done = device.wait_for(lambda x: x["event"] == "action", timeout=15)
    assert done["result"] == "done" and done["status"] == "picked_up"
    device.wait_for(lambda x: worklist(x) and x["orders"] and x["orders"][0]["status"] == "picked_up")

    # The same action replayed again (a lost answer): it does not move the order twice.
    stale = {**done, "id": "replayed-copy"}
    queue_file = Path(device.proc.args[device.proc.args.index("--state-dir") + 1]) / "queue.json"
    device.kill()
    queue_file.write_text(json.dumps([{k: stale[k] for k in ("id", "order_id", "status", "version", "at")}]))
    device = agents(system, rider)
    again = device.wait_for(lambda x: x["event"] == "action", timeout=15)
    assert again["result"] == "already_done"
    history = system.admin.request("GET", f"/orders/{order['id']}/history")["history"]
    assert [h["to_status"] for h in history].count("picked_up") == 1


@pytest.mark.parametrize("live_system", ["amqtt", "mosquitto"], indirect=True)  # the production broker too
def test_presence_online_on_start_offline_when_killed(live_system, agents):
    system = live_system
    rider = system.make_agent()
    admin_login = Api(system.api_url).login(
        "admin", (Path(system.env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    )["mqtt"]
    port = int(system.env["ORDERBUS_BROKER_PORT"])
    presence = f"agents/{rider['id']}/presence"
    watcher = Subscriber("127.0.0.1", port, (presence,), login=admin_login).start()
    try:
        device = agents(system, rider)
        device.wait_for(worklist)
        online = watcher.wait_for(lambda r: r.topic == presence and r.json["state"] == "online", timeout=10)
        assert online.json["agent_id"] == rider["id"]
        _until_presence(system, rider["id"], "online")  # the service trusts the device's message
        device.kill()
        offline = watcher.wait_for(lambda r: r.topic == presence and r.json["state"] == "offline", timeout=10)
        _until_presence(system, rider["id"], "offline")
        after = next(i for i, r in enumerate(watcher.seen) if r is offline)
        agents(system, rider)
        watcher.wait_for(
            lambda r: (
                r.topic == presence
                and r.json["state"] == "online"
                and any(x is r for x in watcher.seen[after + 1 :])
            ),
            timeout=10,
        )
        _until_presence(system, rider["id"], "online")
    finally:
        watcher.stop()


def _until_presence(system: System, agent_id: str, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agents = system.admin.request("GET", "/agents")["agents"]
        if next(a for a in agents if a["id"] == agent_id)["presence"]["state"] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"GET /agents never showed {agent_id} {state}")


def test_offer_shows_and_is_accepted_from_the_device(live_system, agents):
    system = live_system
    rider = system.make_agent()
    device = agents(system, rider)
    device.wait_for(worklist)
    order = system.ready_order("confirmed")
    offered = system.admin.request(
        "PUT", f"/orders/{order['id']}/agent", {"agent_id": rider["id"], "offer": True}
    )
    assert offered["agent_id"] is None
    device.wait_for(lambda x: worklist(x) and [o["id"] for o in x["offers"]] == [order["id"]])
    device.send(f"accept {order['id']}")
    assert device.wait_for(lambda x: x["event"] == "offer")["result"] == "accepted"
    line = device.wait_for(lambda x: worklist(x) and ids(x) == [order["id"]])
    assert line["offers"] == [] and line["badge"] == 1


def test_a_refused_stored_broker_login_is_replaced_once(live_system, agents, tmp_path: Path):
    """A device whose stored broker secret was rotated elsewhere gets a fresh one and connects."""
    system = live_system
    rider = system.make_agent()
    state = tmp_path / f"state-{rider['username']}"
    state.mkdir()
    stale = {**rider["mqtt"], "password": "not-the-secret", "agent_id": rider["id"]}
    (state / "mqtt.json").write_text(json.dumps(stale))
    device = agents(system, rider)
    assert device.wait_for(worklist)["agent_id"] == rider["id"]
    stored = json.loads((state / "mqtt.json").read_text())
    assert stored["password"] != "not-the-secret"
    assert (state / "mqtt.json").stat().st_mode & 0o777 == 0o600


def test_a_revoked_token_is_replaced_and_the_queued_action_still_goes(live_system, tmp_path: Path):
    """A 401 on replay (token expired or revoked) keeps the action, logs in again and sends it."""
    system = live_system
    rider = system.make_agent()
    order = system.ready_order("ready")
    system.assign(order["id"], rider["id"])
    device = AgentDevice(Api(system.api_url), StateDir(tmp_path / "state"), mqtt_url=system.mqtt_url)
    device.login(rider["username"], rider["password"])
    device.connect()
    try:
        deadline = time.monotonic() + 10
        while order["id"] not in device.worklist.orders and time.monotonic() < deadline:
            device.next_update(0.2)
        Api(system.api_url, token=device.api.token).request("DELETE", "/auth/token")
        outcomes = device.act(order["id"], "picked_up")
        assert [o.result for o in outcomes] == ["done"]
        assert device.queue.pending() == []
    finally:
        device.stop()
    assert system.admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up"


def test_device_restarted_while_the_api_is_down_shows_its_worklist_and_queues(live_system, agents):
    """A device that logged in before starts from its state dir when the API is down."""
    system = live_system
    rider = system.make_agent()
    device = agents(system, rider)
    device.wait_for(worklist)
    device.kill()
    order = system.ready_order("ready")
    system.assign(order["id"], rider["id"])

    system.stop("api")
    device = agents(system, rider)
    line = device.wait_for(lambda x: worklist(x) and ids(x) == [order["id"]])
    assert line["badge"] == 1
    device.send(f"pickup {order['id']}")
    assert device.wait_for(lambda x: x["event"] == "queued")["pending"] == 1
    system.start("api")
    done = device.wait_for(lambda x: x["event"] == "action", timeout=15)
    assert done["result"] == "done"
    assert system.admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up"


class LateReload:
    """Mosquitto re-reads its password file ``delay`` seconds after the service rewrites it, as
    with the systemd path unit of docs/production.md (the service does not signal it)."""

    def __init__(self, system: System, delay: float) -> None:
        self.passwd = Path(system.env["ORDERBUS_DATA_DIR"]) / "mqtt" / "passwd"
        self.mosquitto, self.delay = system.mosquitto, delay
        self.reloads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _version(self) -> tuple[int, int]:
        stat = self.passwd.stat()
        return stat.st_ino, stat.st_mtime_ns

    def _run(self) -> None:
        seen = self._version()
        while not self._stop.wait(0.05):
            if self._version() != seen:
                seen = self._version()
                if self._stop.wait(self.delay):
                    return
                self.mosquitto.reload()
                self.reloads += 1

    def start(self) -> LateReload:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.e2e
def test_first_login_gets_through_a_broker_that_learns_of_it_late(tmp_path: Path, agents):
    """A device's first login is issued by the API a moment before the broker re-reads its
    password file: refused at first, the device tries the same login again until the broker
    knows it, and follows its worklist."""
    system = make_system(tmp_path, "mosquitto", sighup=False)
    late = LateReload(system, delay=1.5).start()
    try:
        rider = system.make_agent()
        device = agents(system, rider)
        device.wait_for(worklist, timeout=20)
        order = system.ready_order("confirmed")
        system.assign(order["id"], rider["id"])
        device.wait_for(lambda x: worklist(x) and order["id"] in ids(x), timeout=10)
    finally:
        late.stop()
        for name in list(system.procs):
            system.stop(name)
        system.mosquitto.stop()
    assert late.reloads >= 1
    errors = device.err.name
    assert "Not authorized" in Path(errors).read_text()  # it was refused before the reload


def test_a_failed_delivery_needs_a_reason_and_is_sent_with_it(live_system, agents):
    """`fail <order> <reason> [note]`: an unknown reason and "other" without a note are refused on
    the device (nothing sent); a good one moves the order to failed with reason and note, and
    the device does not announce its own finished order as removed."""
    system = live_system
    rider = system.make_agent()
    order = system.ready_order("ready")
    system.assign(order["id"], rider["id"])
    device = agents(system, rider)
    device.wait_for(lambda x: worklist(x) and ids(x) == [order["id"]])
    device.send(f"pickup {order['id']}")
    assert device.wait_for(lambda x: x["event"] == "action")["result"] == "done"

    device.send(f"fail {order['id']} lost_my_way")
    assert "customer_absent" in device.wait_for(lambda x: x["event"] == "error")["detail"]
    device.send(f"fail {order['id']} other")
    assert "note" in device.wait_for(lambda x: x["event"] == "error")["detail"]
    assert system.admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up"

    device.send(f"fail {order['id']} customer_absent rang three times")
    done = device.wait_for(lambda x: x["event"] == "action")
    assert (done["result"], done["status"]) == ("done", "failed")
    device.wait_for(lambda x: worklist(x) and not x["orders"])
    stored = system.admin.request("GET", f"/orders/{order['id']}")
    assert stored["status"] == "failed"
    assert stored["failure"] == {"reason": "customer_absent", "note": "rang three times"}
    device.send("seen")  # a line after the worklist: no notice came before it
    line = device.wait_for(lambda x: x["event"] in ("notice", "worklist"))
    assert line["event"] == "worklist"


def test_the_connection_line_tells_online_reconnecting_offline_and_online_again(live_system, agents):
    """The broker stops: the device says reconnecting, then offline once it stayed down
    (ORDERBUS_AGENT_OFFLINE_SECONDS); the broker is back: online, and live again."""
    system = live_system
    rider = system.make_agent()
    device = agents(system, rider, ORDERBUS_AGENT_OFFLINE_SECONDS="2")
    device.wait_for(worklist)
    assert device.wait_for(lambda x: x["event"] == "connection")["state"] == "online"
    system.stop("broker")
    states = [device.wait_for(lambda x: x["event"] == "connection", timeout=20)["state"] for _ in range(2)]
    assert states == ["reconnecting", "offline"]
    system.start("broker")
    assert device.wait_for(lambda x: x["event"] == "connection", timeout=30)["state"] == "online"
    order = system.ready_order("confirmed")
    system.assign(order["id"], rider["id"])  # positive control: live again
    device.wait_for(lambda x: worklist(x) and ids(x) == [order["id"]], timeout=20)


def test_the_failure_reasons_are_the_services() -> None:
    """The device offers exactly the reasons PATCH /orders/<id>/status accepts."""
    from clients.agent.state import FAILURE_REASONS
    from order_service.lifecycle import FAILURE_REASONS as SERVICE

    assert FAILURE_REASONS == SERVICE


def test_the_device_starts_with_the_broker_down_says_so_and_connects_when_it_is_back(live_system, agents):
    """The whole bus down at start is no crash: the device starts, tells reconnecting then
    offline, and is online with its worklist once the broker is back."""
    system = live_system
    rider = system.make_agent()
    order = system.ready_order("confirmed")
    system.assign(order["id"], rider["id"])
    system.stop("broker")
    device = agents(system, rider, ORDERBUS_AGENT_OFFLINE_SECONDS="2")
    states = [device.wait_for(lambda x: x["event"] == "connection", timeout=20)["state"] for _ in range(2)]
    assert states == ["reconnecting", "offline"]
    assert device.proc.poll() is None
    system.start("broker")
    # Both, in either order: the device says "online" at CONNACK, and its worklist comes from
    # the broker's retained store or its REST resync a moment before or after (CI saw both).
    seen: set[str] = set()

    def online_with_worklist(x: dict) -> bool:
        if worklist(x) and ids(x) == [order["id"]]:
            seen.add("worklist")
        elif x["event"] == "connection":
            seen.discard("online")  # only the last link state counts
            if x["state"] == "online":
                seen.add("online")
        return seen == {"worklist", "online"}

    device.wait_for(online_with_worklist, timeout=30)
