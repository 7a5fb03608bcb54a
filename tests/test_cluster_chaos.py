"""Fault tests on a three-node NATS cluster (JetStream, MQTT): the faults of test_chaos.py,
and those only a cluster has (a node killed, the whole cluster restarted, a node cut off).

One system per module (harness/cluster.py): three nodes on free ports, stopped by pid;
the API (granian) and the relay on the database of the pass (SQLite, or PostgreSQL, the
production shape: one database per module, dropped afterwards). The relay is told node 1
first and moves to the next node when it loses its broker (``ORDERBUS_MQTT_FAILOVER_URLS``,
by default a cluster's other nodes). Devices and dashboards are paho clients given every
node, as the service hands them out: each reconnect goes to the next node (:class:`Hopper`).

Every scenario accounts with tests/chaos.py (the event log is the truth: delivered,
recovered, lost, duplicated, unexpected) and then reads the retained state on the
nodes with a brand-new subscriber: it must equal the database for every order. Each prints
``[cluster chaos] <scenario>: sent=… received=… lost=… duplicates=… retained==database …``.
Pass means lost 0, unexpected 0 and retained state equal to the database.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg2
import pytest

from clients.rest import Api, ApiUnreachable, dashboard_logins, place_order
from harness import postgres
from harness.cluster import ClusterSystem, make_cluster_system
from order_service.config import Settings
from order_service.lifecycle import TERMINAL
from tests.chaos import (
    FILTERS,
    HOST,
    ORDER,
    SCALE,
    STEPS,
    Counts,
    Workload,
    account,
    admin_api,
    event_log,
    in_background,
    last_cursor,
    page_login,
    restarted,
    streaming,
    wait_converged,
    waited,
)
from tests.cluster_fixtures import require_nats
from tests.conftest import BACKEND
from tests.mqtt_fixtures import Subscriber
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150 * SCALE)]
KEEPALIVE = 5  # seconds: a silent node (paused, or cut off) is left after about 1.5 times this
CONVERGE = 60.0  # seconds a device may take to find a surviving node and catch up (7-15 s measured)
# Seconds the relay may take after a node's kill to find a node that answers it and publish what
# waited in the outbox (1.2-71 s measured here, once 45 s in CI; docs/scaling.md, docs/testing.md).
RELAY_BACK = 90.0


# -- the system -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    """The module's database, on the pass's backend (this module's one system shares it)."""
    if BACKEND == "postgresql":
        databases = request.getfixturevalue("postgres_databases")
        name = databases.take()
        yield postgres.database_url(name)
        databases.drop(name)  # after the system's processes have stopped (they depend on this)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('cluster-chaos-db') / 'orderbus.db'}"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ClusterSystem]:
    """Three nodes, the relay (a short keep-alive: a silent node is noticed) and the API."""
    require_nats()
    cluster_system = make_cluster_system(
        tmp_path_factory.mktemp("cluster-chaos"),
        ORDERBUS_DATABASE_URL=database_url,
        ORDERBUS_MQTT_KEEPALIVE=str(KEEPALIVE),
        ORDERBUS_RELAY_POLL_SECONDS="0.2",
    )
    try:
        yield cluster_system
    finally:
        cluster_system.close()


def _ports(system: ClusterSystem) -> list[int]:
    return [node.mqtt_port for node in system.cluster.nodes]


def _api(system: ClusterSystem) -> tuple[Api, dict]:
    return admin_api(system.api_url, Path(system.env["ORDERBUS_DATA_DIR"]))


# -- devices that know every node -------------------------------------------------------------


class Hopper(Subscriber):
    """A dashboard or device (its own login, persistent session, keep-alive 5 s) given every
    node's port: paho reconnects by itself, and each reconnect goes to the next node.

    ``connections`` lists every accepted connection: its node's port, whether the broker still
    held the session (CONNACK's session-present flag) and when (``time.monotonic()``)."""

    def __init__(
        self, ports: list[int], login: dict, first: int = 0, filters: tuple[str, ...] = FILTERS
    ) -> None:
        super().__init__(
            HOST, ports[first], filters, login=login, client_id=login["username"], clean_session=False
        )
        self.ports, self.at = ports, first
        self.topic: str | None = None  # an agent's device: the one accounted topic (its worklist)
        self.connections: list[tuple[int, bool, float]] = []
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_disconnect = lambda client, *_: self._hop(client)
        self.client.on_connect_fail = lambda client, _userdata: self._hop(client)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connections.append((self.ports[self.at], bool(flags.session_present), time.monotonic()))
        # Refused (a callout that did not answer in time: its node was just killed): the node
        # answers, so the next attempt goes to it again.
        self._refused = reason_code.is_failure
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _hop(self, client: mqtt.Client) -> None:
        if getattr(self, "_refused", False):
            self._refused = False
            return
        # paho has no list of brokers and its port setter refuses a connection it will retry:
        # set the port its next reconnect uses (paho's network thread, between two attempts).
        self.at = (self.at + 1) % len(self.ports)
        client._port = self.ports[self.at]

    def start(self, timeout: float = CONVERGE) -> Hopper:
        self.client.connect_async(HOST, self.ports[self.at], keepalive=KEEPALIVE)
        self.client.loop_start()
        assert self._subscribed.wait(timeout), f"{self.client._client_id!r}: no node accepted it"
        return self

    @property
    def port(self) -> int:  # the node of the latest connection
        return self.connections[-1][0] if self.connections else 0

    @port.setter
    def port(self, value: int) -> None:  # Subscriber's constructor sets it
        pass


def agent_device(ports: list[int], agent: dict, first: int) -> Hopper:
    """An agent's device: its own topics only; its worklist is what it is accounted on."""
    device = Hopper(ports, agent["mqtt"], first, (f"agents/{agent['id']}/#",))
    device.topic = f"agents/{agent['id']}/assigned"
    return device


def offline_agent(ports: list[int], agent: dict, first: int) -> Hopper:
    """An agent's device that connects (its persistent session made), holds its current
    worklist, and goes offline: the returned device has stopped."""
    away = agent_device(ports, agent, first).start()
    away.wait_for(lambda r: r.topic == away.topic, timeout=30)
    away.stop()
    return away


@contextmanager
def hoppers(*made: Callable[[], Hopper]) -> Iterator[list[Hopper]]:
    started: list[Hopper] = []
    try:
        for make in made:
            started.append(make().start())
        yield started
    finally:
        for device in started:
            device.stop()


# -- checks ----------------------------------------------------------------------------------


def _orders(api: Api) -> list[dict]:
    found, cursor = [], ""
    while True:
        page = api.request("GET", f"/orders?limit=200{cursor}")
        found += page["orders"]
        if not page["next_cursor"]:
            return found
        cursor = f"&cursor={page['next_cursor']}"


def _differences(held: dict[str, int], orders: dict[str, dict]) -> dict[str, tuple[int | None, int]]:
    """Orders whose retained status is not the database's version: topic -> (held, database).
    A finished order past its retention window may have none."""
    return {
        topic: (held.get(topic), order["version"])
        for topic, order in orders.items()
        if held.get(topic) != order["version"] and not (order["status"] in TERMINAL and topic not in held)
    }


def retained_on(port: int, api: Api, orders: dict[str, dict], timeout: float = 10.0) -> dict[str, int]:
    """What a brand-new dashboard (a login of its own, clean session) finds on the node of
    ``port``: collected until it holds the database's version of every order, or ``timeout``."""
    fresh = Hopper([port], page_login(api))
    fresh.client._clean_session = True  # a new page: nothing of an earlier session
    fresh.start()

    def held() -> dict[str, int]:
        return {t: r.version for t, r in fresh.latest().items() if r.payload and r.version is not None}

    try:
        deadline = time.monotonic() + timeout
        while _differences(held(), orders) and time.monotonic() < deadline:
            fresh.settle(quiet=0.2, timeout=1)
        fresh.settle(quiet=0.2, timeout=2)  # and nothing newer than the database comes after
        return held()
    finally:
        fresh.stop()


def _stale(port: int, api: Api, orders: dict[str, dict]) -> str:
    """What a new subscriber on that node finds wrong: orders missing / at an older version
    than the database's ("0/0" when it holds the database's state)."""
    wrong = _differences(retained_on(port, api, orders, 5), orders).values()
    return f"{sum(held is None for held, _ in wrong)}/{sum(held is not None for held, _ in wrong)}"


def database_orders(api: Api) -> dict[str, dict]:
    """Every order in the database by its status topic."""
    orders = {f"orders/{o['id']}/status": o for o in _orders(api)}
    assert orders, "no orders: nothing to compare"
    return orders


def retained_equals_database(system: ClusterSystem, api: Api, *indexes: int) -> int:
    """On each node (1-based ``indexes``), the retained status of every order is the database's
    version; returns how many orders."""
    orders = database_orders(api)
    for index in indexes:
        wrong = _differences(retained_on(system.cluster.node(index).mqtt_port, api, orders), orders)
        assert not wrong, f"node {index}: retained (held, database) differ for {len(wrong)} orders: {wrong}"
    return len(orders)


def heal(system: ClusterSystem, api: Api) -> list[int]:
    """The remedy for nats-server 2.15.1's stale retained view (docs/scaling.md): a node that
    still serves stale retained state is restarted (one at a time) and reloads it from the
    replicated stream. A restart moves the nodes' retained-message consumers again, so every
    node is checked again after one (at most three rounds). Returns the nodes restarted."""
    ports = _ports(system)
    orders = database_orders(api)
    healed: list[int] = []
    for _ in range(3):
        stale_nodes = [i for i in (1, 2, 3) if _stale(ports[i - 1], api, orders) != "0/0"]
        if not stale_nodes:
            break
        index = stale_nodes[0]
        healed.append(index)
        system.cluster.stop(index)
        system.cluster.start(index)
    return healed


def report(scenario: str, counts: Counts, orders: int, nodes: str) -> None:
    """The line every scenario prints (the ledger's own line comes from ``Counts.check``)."""
    print(
        f"[cluster chaos] {scenario}: sent={counts.events} received={counts.delivered + counts.recovered}"
        f" lost={counts.lost} duplicates={counts.duplicated} unexpected={counts.unexpected}"
        f" retained==database {orders}/{orders} orders on nodes {nodes}"
    )


def converge(devices: list[Hopper], api: Api, mark: int, name: str, topic: str | None = None) -> Counts:
    """Each device holds the newest state; their ledgers added up and checked."""
    totals = Counts()
    known = event_log(api)
    each: list[str] = []  # per device, for a failure's message
    for device in devices:
        events = wait_converged(device, api, mark, topic or device.topic, timeout=CONVERGE)
        counts = account(events, device.seen, known=known)
        for field in ("events", "delivered", "recovered", "lost", "duplicated", "unexpected"):
            setattr(totals, field, getattr(totals, field) + getattr(counts, field))
        assert not device.contract_errors, device.contract_errors
        hops = [(port, present, round(at, 1)) for port, present, at in device.connections]
        each.append(
            f"{device.client._client_id.decode()}: {counts.lost} lost of {counts.events};"
            f" connections (port, session present, t) {hops}"
        )
    try:
        totals.check(name)
    except AssertionError as error:
        raise AssertionError(f"{error}\n" + "\n".join(each)) from None
    return totals


def _relay_node(system: ClusterSystem) -> int:
    """The node the relay last connected to (its log: ``relay connected to mqtt://host:port``)."""
    text = (system.tmp / "relay.log").read_text(errors="replace")
    ports = _ports(system)
    latest = max((text.rfind(f"relay connected to mqtt://{HOST}:{p}"), i) for i, p in enumerate(ports))
    assert latest[0] >= 0, f"the relay never connected:\n{text[-2000:]}"
    return latest[1] + 1


def _relay_connects(system: ClusterSystem) -> int:
    return (system.tmp / "relay.log").read_text(errors="replace").count("relay connected to")


def _relay_catch_ups(system: ClusterSystem) -> int:
    """Connections the relay has caught up on (its log: what it republished, or nothing)."""
    text = (system.tmp / "relay.log").read_text(errors="replace")
    return len(re.findall(r"nothing to republish|orders and worklists in \d+ ms", text))


# -- the relay's failover list -----------------------------------------------------------------


def test_the_relay_is_told_every_other_node_of_a_cluster(tmp_path: Path):
    """Settings only: a cluster's other nodes by default, an explicit list instead, none without a cluster."""
    base = {"data_dir": tmp_path, "broker_port": 21883}
    cluster = Settings(**base, cluster_nodes=3)  # type: ignore[arg-type]
    assert [a.port for a in cluster.mqtt_failover_addresses] == [21884, 21885]
    chosen = Settings(
        **base, cluster_nodes=3, mqtt_failover_urls="mqtt://10.0.0.2:1883, ws://10.0.0.3:80/mqtt"
    )  # type: ignore[arg-type]
    assert [(a.host, a.port, a.transport) for a in chosen.mqtt_failover_addresses] == [
        ("10.0.0.2", 1883, "tcp"),
        ("10.0.0.3", 80, "websockets"),
    ]
    assert Settings(**base).mqtt_failover_addresses == []  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ORDERBUS_MQTT_FAILOVER_URLS"):
        Settings(**base, mqtt_failover_urls="http://10.0.0.2")  # type: ignore[arg-type]


# -- the faults of test_chaos.py, on the cluster ------------------------------------------------


def _unpublished_event_ids(database_url: str) -> set[str]:
    query = "SELECT payload FROM outbox WHERE published_at IS NULL"
    if database_url.startswith("sqlite:"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
        conn.close()
    return {(json.loads(p) if isinstance(p, str) else p)["event_id"] for (p,) in rows}


def _published_within(database_url: str, timeout: float) -> bool:
    """Whether every outbox row was marked published (a node acknowledged it) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while _unpublished_event_ids(database_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def test_relay_killed_between_publish_and_mark(system: ClusterSystem, database_url: str):
    """The relay dies (SIGKILL, the test-only kill point) after a node acknowledged a batch and
    before the database marked it published; restarted, it sends those rows again: dashboards
    on the other two nodes get duplicates and lose nothing."""
    api, _ = _api(system)
    agent = system.make_agent()
    ports = _ports(system)
    pending: set[str] = set()
    caught_up = _relay_catch_ups(system)
    with restarted(system, "relay", ORDERBUS_TEST_KILL_AT="relay.after_publish:5"):
        # Caught up before the workload starts: its batches (the fifth is killed) come during
        # it, and changes follow the kill. A relay still finding a node that answers (5 s per
        # node) once met a workload already done: no fifth batch, or none after it.
        assert waited(lambda: _relay_catch_ups(system) > caught_up, 60), "the relay did not catch up"
        mark = last_cursor(api)
        with hoppers(
            lambda: Hopper(ports, page_login(api), 1), lambda: Hopper(ports, page_login(api), 2)
        ) as dash:
            work = Workload(api, agent["id"])
            runner = in_background(work, STEPS)
            relay = system.procs["relay"]
            assert waited(lambda: relay.poll() is not None), f"no kill point reached; {work.steps} steps"
            assert relay.returncode == -signal.SIGKILL
            pending |= _unpublished_event_ids(database_url)
            system.procs.pop("relay")
            del system.env["ORDERBUS_TEST_KILL_AT"]  # the restarted relay runs to the end
            system.start("relay")
            runner.join(60 * SCALE)
            assert not runner.is_alive(), "the workload did not finish"
            counts = converge(dash, api, mark, "cluster: relay kill -9 after PUBACK, before mark")
    assert pending, "no acknowledged row was left unmarked: the window was missed"
    assert counts.duplicated >= 1
    report(
        "relay kill -9 after PUBACK, before mark", counts, retained_equals_database(system, api, 2, 3), "2,3"
    )


def test_api_worker_killed_after_commit_and_the_client_retries(system: ClusterSystem):
    """An API worker dies after committing an order and before answering; the client
    retries with the same Idempotency-Key: one order, and a dashboard on node 3 gets its
    first event once (version 1)."""
    api, _ = _api(system)
    before = len(_orders(api))
    mark = last_cursor(api)
    with hoppers(lambda: Hopper(_ports(system), page_login(api), 2)) as (dash,):
        with restarted(system, "api", ORDERBUS_TEST_KILL_AT="api.after_commit:1"):
            with pytest.raises(ApiUnreachable):  # the answer is lost with the worker
                api.request("POST", "/orders", ORDER, headers={"Idempotency-Key": "cluster-once"})
            order = place_order(api, ORDER, key="cluster-once")
        topic = f"orders/{order['id']}/status"
        dash.wait_for(lambda r: r.topic == topic and r.version == 1, timeout=30)
        counts = converge([dash], api, mark, "cluster: api worker kill -9 after commit, client retry")
    assert len(_orders(api)) == before + 1
    created = [e for e in event_log(api, mark) if e["topic"] == topic]
    assert [e["version"] for e in created] == [1]
    # One first event (one event id); the relay may deliver it more than once (at least once:
    # its recheck after a stalled acknowledgement republishes it, with the same id).
    firsts = {r.json["event_id"] for r in dash.on(topic) if r.version == 1 and r.json}
    assert len(firsts) == 1, f"the order's first event twice: {firsts}"
    report(
        "api worker kill -9 after commit, client retry", counts, retained_equals_database(system, api, 3), "3"
    )


def test_agent_offline_for_k_events_gets_every_worklist_version_on_another_node(system: ClusterSystem):
    """An agent's device (persistent session) leaves node 2 while its worklist changes K
    times; it comes back on node 3: the session is there and it gets every version it missed."""
    api, _ = _api(system)
    agent = system.make_agent()
    topic = f"agents/{agent['id']}/assigned"
    ports = _ports(system)
    mark = last_cursor(api)
    away = offline_agent(ports, agent, 1)
    Workload(api, agent["id"]).run(10 * SCALE)
    with hoppers(lambda: agent_device(ports, agent, 2)) as (back,):
        counts = converge([back], api, mark, "cluster: agent offline for K worklist events", topic)
        assert back.connections[0][:2] == (ports[2], True), back.connections  # node 3, session present
        # Every version it missed, not only the newest (the session queued them).
        versions = [r.version for r in back.seen if r.topic == topic and r.payload]
        newest = max(e["version"] for e in event_log(api, mark) if e["topic"] == topic)
        missed = [
            e["version"]
            for e in event_log(api, mark)
            if e["topic"] == topic and e["version"] > away.on(topic)[-1].version
        ]
        assert set(missed) <= set(versions) and versions[-1] == newest, (missed, versions)
    assert counts.recovered == 0, "a queued worklist version was skipped"
    report(
        f"agent offline for {len(missed)} worklist versions",
        counts,
        retained_equals_database(system, api, 3),
        "3",
    )


def test_dashboard_reconnect_storm_converges(system: ClusterSystem):
    """Dashboards spread over the three nodes (each through a proxy) lose their connections at
    the same instant while orders change; all reconnect at once, each to the next node, and
    each ends with the database's state."""
    api, _ = _api(system)
    password = (Path(system.env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
    logins = dashboard_logins(system.api_url, "admin", password, 12 * SCALE)
    agent = system.make_agent()
    proxies = [TcpProxy(HOST, port).start() for port in _ports(system)]
    mark = last_cursor(api)
    ports = [proxy.port for proxy in proxies]
    try:
        made = [lambda n=n, login=login: Hopper(ports, login, n % 3) for n, login in enumerate(logins)]
        with hoppers(*made) as dashboards:
            work = Workload(api, agent["id"])
            runner = in_background(work, STEPS)
            assert waited(lambda: work.steps >= STEPS // 3), "the workload did not start"
            accepted = sum(proxy.connections for proxy in proxies)
            for proxy in proxies:
                proxy.drop()
            runner.join(60 * SCALE)
            assert not runner.is_alive(), "the workload did not finish"
            counts = converge(
                dashboards, api, mark, f"cluster: reconnect storm of {len(dashboards)} dashboards"
            )
            assert sum(p.connections for p in proxies) >= accepted + len(dashboards), "they did not reconnect"
            assert all(len(d.connections) >= 2 for d in dashboards)
    finally:
        for proxy in proxies:
            proxy.stop()
    # Measured, not asserted: the nodes restarted by an earlier test of this module (a kill, a
    # heal) may have left another node's retained view no longer following the stream
    # (docs/scaling.md).
    stale = {i: _stale(port, api, database_orders(api)) for i, port in enumerate(_ports(system), 1)}
    healed = heal(system, api)
    print(
        f"[cluster chaos] reconnect storm: orders missing/older per node {stale}; restarted to heal: {healed}"
    )
    report(
        f"reconnect storm of {len(logins)} dashboards",
        counts,
        retained_equals_database(system, api, 1, 2, 3),
        "1,2,3",
    )


# -- the cluster's own faults ---------------------------------------------------------------------


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_a_node_killed_while_orders_stream(system: ClusterSystem, database_url: str, victim: int):
    """kill -9 of one node (node 1 is the relay's first) while orders stream, with dashboards on
    every node and an agent's device on the victim: the relay publishes what waited within
    ``RELAY_BACK`` of the kill, every device the victim held reconnects to a surviving node
    with its session, and nothing is lost. Once the victim is back (and a node still serving
    stale retained state restarted), every node retains the database's state for every order."""
    api, _ = _api(system)
    agent = system.make_agent()
    ports = _ports(system)
    victim_port = ports[victim - 1]
    survivors = [i for i in (1, 2, 3) if i != victim]
    relay_before = _relay_node(system)
    connects = _relay_connects(system)
    mark = last_cursor(api)
    made = [lambda i=i: Hopper(ports, page_login(api), i) for i in range(3)]
    made.append(lambda: agent_device(ports, agent, victim - 1))
    killed: list[float] = []
    restarted = 0.0
    try:
        with hoppers(*made) as devices:
            on_victim = [d for d in devices if d.port == victim_port]
            assert len(on_victim) == 2, [d.port for d in devices]

            def fault(work: Workload) -> None:
                killed.append(time.monotonic())
                system.cluster.stop(victim, signal.SIGKILL)

            streaming(fault, api, agent, 90 * SCALE)
            # A relay on the victim (or on a survivor that stops answering while JetStream
            # elects new leaders) publishes nothing until a node answers it: its time is its
            # own check, so that each device's CONVERGE counts from what the nodes were given
            # (CI once saw node 1's dashboard "lose" every event after the kill, 32 of 47).
            relay_ok = _published_within(database_url, RELAY_BACK - (time.monotonic() - killed[0]))
            published = time.monotonic() - killed[0]
            assert relay_ok, (
                f"outbox rows still unpublished {published:.0f} s after the kill of node {victim};"
                f" the relay's log:\n{(system.tmp / 'relay.log').read_text(errors='replace')[-3000:]}"
            )
            counts = converge(devices, api, mark, f"cluster: node {victim} kill -9 mid-stream")
            converged = time.monotonic() - killed[0]
            for device in on_victim:
                assert device.port in [ports[i - 1] for i in survivors], device.connections
                assert device.connections[-1][1], "the persistent session was not found on the survivor"
            if relay_before == victim:  # the relay moved on to a survivor
                assert _relay_connects(system) > connects and _relay_node(system) in survivors
            back = max(device.connections[-1][2] for device in on_victim) - killed[0]
            # Measured, not asserted: while the victim is down a new subscriber on a survivor may
            # find stale retained state (NATS 2.15.1: a survivor's copy of the retained messages
            # stops following their stream; docs/testing.md). Devices that stay connected are not
            # affected (asserted above).
            orders = database_orders(api)
            stale = {i: _stale(ports[i - 1], api, orders) for i in survivors}
    finally:
        if victim not in system.cluster.procs:
            restarted = system.cluster.start(victim)
    healed = heal(system, api)
    total = retained_equals_database(system, api, 1, 2, 3)
    print(
        f"[cluster chaos] node {victim} kill -9: the relay had published what waited {published:.1f} s"
        f" later, every device held the newest state {converged:.1f} s later;"
        f" its devices back on survivors {back:.1f} s later;"
        f" orders missing/older in a new subscriber's retained state on survivors while it was"
        f" down {stale} (of {len(orders)});"
        f" started again, it answered MQTT after {restarted:.1f} s; nodes restarted to heal: {healed}"
    )
    report(f"node {victim} kill -9 mid-stream", counts, total, "1,2,3 once healed")


def test_whole_cluster_restart_keeps_retained_state_and_sessions(system: ClusterSystem):
    """Every node stopped (SIGTERM) and started again with the relay stopped (so that nothing
    is republished): the retained state equals the database on every node, and an agent's
    persistent session, offline before the restart, gets on another node every worklist
    version queued for it. Then the system goes on: a new change reaches it."""
    api, _ = _api(system)
    agent = system.make_agent()
    topic = f"agents/{agent['id']}/assigned"
    ports = _ports(system)
    mark = last_cursor(api)
    offline_agent(ports, agent, 0)
    with hoppers(lambda: Hopper(ports, page_login(api), 2)) as (dash,):
        work = Workload(api, agent["id"])
        work.run(10 * SCALE)
        converge([dash], api, mark, "cluster: before the restart")  # all published: nothing pending
    system.stop("relay")
    try:
        for index in (1, 2, 3):
            system.cluster.stop(index)
        took = system.cluster.start()
        orders = retained_equals_database(system, api, 1, 2, 3)
        with hoppers(lambda: agent_device(ports, agent, 1)) as (back,):
            counts = converge(
                [back], api, mark, "cluster: whole-cluster restart, agent's queued versions", topic
            )
            assert back.connections[0][:2] == (ports[1], True), back.connections  # node 2, session present
            assert counts.recovered == 0, "a queued worklist version was lost in the restart"
            # The system goes on: a new assignment reaches the device through the restarted cluster.
            system.start("relay")
            order = system.ready_order("confirmed")
            system.assign(order["id"], agent["id"])
            back.wait_for(lambda r: r.topic == topic and order["id"].encode() in r.payload, timeout=30)
    finally:
        if "relay" not in system.procs:
            system.start("relay")
    print(f"[cluster chaos] whole cluster restart: every node answering MQTT after {took:.1f} s")
    report("whole-cluster restart", counts, orders, "1,2,3")


def test_a_paused_node_heals_with_nothing_lost(system: ClusterSystem):
    """The relay's node is cut off (SIGSTOP: no routes, no clients, no answers) for 8 s while
    orders stream, then resumes (SIGCONT): whether the relay and the node's devices waited or
    moved on, nothing is lost, and once healed the node retains the database's state like
    the others."""
    api, _ = _api(system)
    agent = system.make_agent()
    ports = _ports(system)
    victim = _relay_node(system)
    connects = _relay_connects(system)
    mark = last_cursor(api)
    made = [lambda i=i: Hopper(ports, page_login(api), i) for i in range(3)]
    made.append(lambda: agent_device(ports, agent, victim - 1))
    with hoppers(*made) as devices:

        def fault(work: Workload) -> None:
            system.cluster.send(victim, signal.SIGSTOP)
            try:
                time.sleep(8)  # the fault under test: the node is silent for longer than a keep-alive
            finally:
                system.cluster.send(victim, signal.SIGCONT)

        streaming(fault, api, agent, 90 * SCALE)
        counts = converge(devices, api, mark, f"cluster: node {victim} paused 8 s mid-stream")
        moved = sum(len(device.connections) - 1 for device in devices)
    system.cluster.wait_ready(victim)
    relay_moves = _relay_connects(system) - connects
    # Measured, not asserted: a paused node's retained view may stop following the stream,
    # like a survivor's after a kill.
    stale = _stale(ports[victim - 1], api, database_orders(api))
    healed = heal(system, api)
    orders = retained_equals_database(system, api, 1, 2, 3)
    print(
        f"[cluster chaos] node {victim} paused 8 s: the relay reconnected {relay_moves} times,"
        f" the devices {moved} times (a pause under two keep-alives may be waited out);"
        f" orders missing/older on the paused node once resumed {stale};"
        f" nodes restarted to heal: {healed}"
    )
    report(f"node {victim} (the relay's) paused 8 s mid-stream", counts, orders, "1,2,3")
