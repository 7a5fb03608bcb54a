"""Fault tests: kill, restart and stall the real processes; count what the database says
happened against what subscribers got (tests/chaos.py: lost, duplicated, unexpected,
recovered). Pass means lost 0 and unexpected 0.

Broker, API (granian) and relay run as separate processes (harness/system.py),
one system per module shared by the scenarios: each scenario leaves every process
running again, and accounts only for the events after it started. ``make test`` runs
them at ORDERBUS_CHAOS_SCALE=1; ``make chaos`` at a larger scale. They do not depend on
the database backend and run in the SQLite pass only.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.rest import Api, ApiUnreachable, dashboard_logins, place_order
from harness.mosquitto import Mosquitto
from harness.processes import stop_group
from harness.system import System, make_system
from tests.chaos import (
    HOST,
    ORDER,
    SCALE,
    STEPS,
    Counts,
    Workload,
    account,
    admin_api,
    broker_port,
    data_dir_of,
    event_log,
    in_background,
    last_cursor,
    observer,
    restarted,
    scenario,
    wait_converged,
    waited,
    while_down,
)
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180 * SCALE)]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Embedded broker, relay, API; a short relay keep-alive so that a stall is noticed."""
    system = make_system(
        tmp_path_factory.mktemp("chaos"), ORDERBUS_MQTT_KEEPALIVE="5", ORDERBUS_RELAY_POLL_SECONDS="0.2"
    )
    try:
        yield system
    finally:
        system.close()


@pytest.fixture(scope="module")
def with_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, Mosquitto]]:
    """Mosquitto from the repository's mosquitto.conf in place of the embedded broker."""
    system = make_system(
        tmp_path_factory.mktemp("chaos-mosquitto"),
        "mosquitto",
        ORDERBUS_MQTT_KEEPALIVE="5",
        ORDERBUS_RELAY_POLL_SECONDS="0.2",
    )
    mosquitto = system.mosquitto
    try:
        yield system, mosquitto
    finally:
        system.close()


@pytest.mark.parametrize("how", ["kill -9", "graceful restart"])
def test_embedded_broker_dies_mid_stream(embedded: System, how: str):
    """Broker killed (SIGKILL: sessions and retained store gone) or restarted (SIGTERM) while
    orders change: the API keeps answering, rows wait in the outbox, and once it is back the
    relay publishes them and republishes the state: nothing lost, nothing unexpected."""

    def fault(work: Workload) -> None:
        stop_group(embedded.procs.pop("broker"), signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        while_down(work)
        embedded.start("broker")

    scenario(embedded, f"embedded broker {how}", fault)


@pytest.mark.parametrize("how", ["kill -9", "graceful restart"])
def test_mosquitto_dies_mid_stream(with_mosquitto, how: str):
    """The same against Mosquitto with the repository's configuration (persistence on)."""
    system, mosquitto = with_mosquitto

    def fault(work: Workload) -> None:
        mosquitto.stop(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        while_down(work)
        mosquitto.start()

    scenario(system, f"mosquitto {how}", fault, port=mosquitto.port)


def _unpublished_event_ids(system: System) -> set[str]:
    with sqlite3.connect(data_dir_of(system) / "orderbus.db") as conn:
        rows = conn.execute("SELECT payload FROM outbox WHERE published_at IS NULL").fetchall()
    return {json.loads(payload)["event_id"] for (payload,) in rows}


def test_relay_killed_between_publish_and_mark(embedded: System):
    """The relay dies (SIGKILL, from a test-only kill point) after the broker acknowledged a
    batch and before the database marked it published. Those rows are still pending, the
    dashboard already has them; the restarted relay sends them again: duplicates, no loss."""
    killed_relay: dict[str, object] = {}

    def fault(work: Workload) -> None:
        proc = embedded.procs["relay"]

        def killed() -> bool:
            # Each order is a batch of its own for an idle relay: the kill point's fifth batch
            # comes even if the workload's rows went out in fewer (CI saw it finish in four).
            if proc.poll() is None:
                work.api.request("POST", "/orders", ORDER)
            return waited(lambda: proc.poll() is not None, 0.3)

        assert waited(killed), "the relay never reached its kill point"
        assert proc.returncode == -signal.SIGKILL
        killed_relay["pending"] = _unpublished_event_ids(embedded)
        embedded.procs.pop("relay")
        del embedded.env["ORDERBUS_TEST_KILL_AT"]  # the restarted relay runs to the end
        embedded.start("relay")
        # Its catch-up sent them again: the dashboard may hold every version already (the kill
        # came after the workload's last change), and would not wait for the copies.
        assert waited(lambda: not _unpublished_event_ids(embedded)), "the restarted relay did not catch up"

    with restarted(embedded, "relay", ORDERBUS_TEST_KILL_AT="relay.after_publish:5"):
        counts = scenario(embedded, "relay kill -9 after PUBACK, before mark", fault)
    assert killed_relay["pending"], "no acknowledged row was left unmarked: the window was missed"
    assert counts.duplicated >= 1


def test_network_stall_between_relay_and_broker(embedded: System):
    """The relay reaches the broker through a proxy that stalls (bytes held both ways for
    longer than a publish may wait), then drops the connection, then recovers."""
    proxy = TcpProxy(HOST, broker_port(embedded)).start()
    try:

        def fault(work: Workload) -> None:
            proxy.pause()
            time.sleep(3)  # the fault under test: a stall longer than a publish may wait
            proxy.drop()
            time.sleep(0.5)  # the fault under test: the path stays stalled for a moment after the drop
            proxy.resume()

        with restarted(embedded, "relay", ORDERBUS_MQTT_URL=f"mqtt://{HOST}:{proxy.port}"):
            assert waited(lambda: proxy.connections >= 1, 15)
            scenario(embedded, "network stall relay-broker", fault)
        assert proxy.connections >= 2, "the relay never reconnected through the proxy"
    finally:
        proxy.stop()


def _orders_total(api: Api) -> int:
    total, cursor = 0, ""
    while True:
        page = api.request("GET", f"/orders?limit=200{cursor}")
        total += len(page["orders"])
        if not page["next_cursor"]:
            return total
        cursor = f"&cursor={page['next_cursor']}"


def test_api_worker_killed_after_commit_and_the_client_retries(embedded: System):
    """An API worker process dies (SIGKILL, test-only kill point) after committing an order and
    before answering; the client retries with the same Idempotency-Key and gets that order:
    one order, one order.created event."""
    api, _ = admin_api(embedded.api_url, data_dir_of(embedded))
    before = _orders_total(api)
    mark = last_cursor(api)
    with restarted(embedded, "api", ORDERBUS_TEST_KILL_AT="api.after_commit:1"):
        try:
            api.request("POST", "/orders", ORDER, headers={"Idempotency-Key": "chaos-once"})
            pytest.fail("the worker answered: the kill point was not reached")
        except ApiUnreachable:
            pass  # the answer was lost with the worker; was the order committed?
        order = place_order(api, ORDER, key="chaos-once")
    assert _orders_total(api) == before + 1
    created = [e for e in event_log(api, mark) if e["topic"] == f"orders/{order['id']}/status"]
    assert [e["version"] for e in created] == [1]
    print(f"[chaos] api worker kill -9 after commit: orders={_orders_total(api) - before} duplicates=0")


def test_api_workers_killed_mid_burst_lose_and_double_nothing(embedded: System):
    """Every API worker process is killed (SIGKILL) while clients post orders with retries: each
    client gets its order, and the database holds exactly one order per client."""
    api, _ = admin_api(embedded.api_url, data_dir_of(embedded))
    before = _orders_total(api)
    master = embedded.procs["api"].pid
    clients = 8 * SCALE
    results: list[dict] = []
    errors: list[str] = []

    def customer(n: int) -> None:
        own = Api(embedded.api_url, token=api.token)
        for k in range(3):
            try:
                results.append(place_order(own, ORDER, key=f"burst-{n}-{k}", attempts=10))
            except Exception as exc:  # reported by the test, not lost in a thread
                errors.append(f"customer {n} order {k}: {exc!r}")

    threads = [threading.Thread(target=customer, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    assert waited(lambda: results, 30), "no order placed: the burst did not start"  # under way
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(results) == clients * 3
    assert len({r["id"] for r in results}) == clients * 3
    assert _orders_total(api) == before + clients * 3
    print(f"[chaos] api workers kill -9 mid-burst: workers killed={len(children)} lost=0 duplicated=0")


def test_agent_offline_for_k_events_gets_every_worklist_version(embedded: System):
    """An agent's device (persistent session) is offline while K changes hit its worklist;
    when it reconnects it receives every version it missed, the newest last."""
    api, _ = admin_api(embedded.api_url, data_dir_of(embedded))
    agent = embedded.make_agent()
    topic = f"agents/{agent['id']}/assigned"
    mark = last_cursor(api)
    device = observer(HOST, broker_port(embedded), agent["mqtt"], (f"agents/{agent['id']}/#",))
    device.wait_for(lambda r: r.topic == topic)  # it holds its current worklist before it goes
    device.stop()
    Workload(api, agent["id"]).run(10 * SCALE)
    back = observer(HOST, broker_port(embedded), agent["mqtt"], (f"agents/{agent['id']}/#",))
    try:
        events = wait_converged(back, api, mark, topic)
        counts = account(events, device.seen + back.seen, known=event_log(api))
        counts.check(f"agent offline for {len(events)} worklist events")
        assert counts.recovered == 0, "a queued worklist version was skipped"
        versions = [r.version for r in back.seen if r.topic == topic and r.payload]
        assert versions[-1] == max(e["version"] for e in events)
    finally:
        back.stop()


def test_dashboard_reconnect_storm_converges(embedded: System):
    """Many dashboards (each its broker login, persistent sessions) lose their connections
    at the same instant while orders change; all reconnect at once and each ends with the
    database's state."""
    api, _ = admin_api(embedded.api_url, data_dir_of(embedded))
    password = (data_dir_of(embedded) / "admin-password").read_text().strip()
    logins = dashboard_logins(embedded.api_url, "admin", password, 12 * SCALE)
    agent = embedded.make_agent()
    proxy = TcpProxy(HOST, broker_port(embedded)).start()
    mark = last_cursor(api)
    dashboards = [observer(HOST, proxy.port, login) for login in logins]
    try:
        work = Workload(api, agent["id"])
        runner = in_background(work, STEPS)
        assert waited(lambda: work.steps >= STEPS // 3)
        proxy.drop()
        runner.join(60 * SCALE)
        totals = Counts()
        for dash in dashboards:
            counts = account(wait_converged(dash, api, mark), dash.seen, known=event_log(api))
            for field in ("events", "delivered", "recovered", "lost", "duplicated", "unexpected"):
                setattr(totals, field, getattr(totals, field) + getattr(counts, field))
        totals.check(f"reconnect storm of {len(dashboards)} dashboards")
        assert proxy.connections >= 2 * len(dashboards), "the dashboards did not reconnect"
    finally:
        for dash in dashboards:
            dash.stop()
        proxy.stop()
