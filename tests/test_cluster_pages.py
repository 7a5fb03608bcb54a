"""The web pages survive the loss of their cluster node (kill -9), in a real browser.

Each test starts the system on a fresh three-node NATS cluster (harness/cluster.py), opens
a page in chromium (the dashboard at 1366×900; the courier app at 390×844, logged in as an
agent), finds the node its MQTT-over-WebSocket connection is on from every node's
monitoring endpoint (``/connz``), kills that node with SIGKILL and makes a change over REST:
the page must show it, connected to a surviving node. mqtt.js moves to the next node of the
login's list on each reconnect (``clusterServers`` in clients/admin/js/cluster.js); after a
node dies the survivors may refuse a SUBSCRIBE (SUBACK 0x80) while JetStream elects new
stream leaders, and the pages subscribe again until granted (``subscribeGranted``). Each
test prints its timings and how many refusals the page met.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import ClusterSystem, make_cluster_system
from tests.cluster_fixtures import require_nats
from tests.courier_page import PHONE, card, log_in
from tests.dashboard_fixtures import browser, watched_context  # noqa: F401
from tests.dashboard_page import open_dashboard, place

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(300)]

# The page is back within this after the kill: a survivor's first CONNACK waits ~5 s while
# JetStream recovers, and a refused SUBSCRIBE is tried again after 0.5, 1, 2, 4, 5, 5... s.
# A change made then shows once the relay has found a node that answers (it moves on after
# 5 s without an answer: up to ~30 s after the kill, docs/scaling.md).
BACK_MS = 45000
# A change made once the page is back shows when the relay publishes again: on a loaded CI host
# JetStream answered the relay's subscription on no survivor for 45 s after a kill once.
ONCE_BACK_MS = 90000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSystem]:
    """The system (API, relay) on a cluster of its own, stopped by pid after the test."""
    require_nats()
    began = time.monotonic()
    system = make_cluster_system(tmp_path)
    system.base = system.api_url.removesuffix("/api/v1")
    system.password = (tmp_path / "var" / "admin-password").read_text().strip()
    took = time.monotonic() - began
    print(f"\n[cluster pages] a fresh three-node cluster with the API and the relay: {took:.1f} s")
    try:
        yield system
    finally:
        system.close()


def connections(system: ClusterSystem, index: int) -> list[dict]:
    """Node ``index``'s client connections, from its monitoring endpoint."""
    node = system.cluster.node(index)
    with urllib.request.urlopen(
        f"http://{node.host}:{node.monitor_port}/connz?auth=true", timeout=5
    ) as answer:
        return json.load(answer).get("connections") or []


def node_of(system: ClusterSystem, client_id: str, among: tuple[int, ...] = (1, 2, 3)) -> int | None:
    """The node (of ``among``) holding an MQTT connection with that client id, if any."""
    holding = [i for i in among if any(c.get("mqtt_client") == client_id for c in connections(system, i))]
    assert len(holding) <= 1, f"{client_id} connected to nodes {holding} at once"
    return holding[0] if holding else None


def wait_node_of(system: ClusterSystem, client_id: str, among: tuple[int, ...], timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (node := node_of(system, client_id, among)) is None:
        assert time.monotonic() < deadline, f"{client_id} is on none of nodes {among} ({timeout} s)"
        time.sleep(0.2)  # polling the monitoring endpoint, which has no event to wait on
    return node


def refusals(page) -> list[str]:
    """The page's console warnings about refused or unanswered subscriptions, as it logs them."""
    warnings: list[str] = []
    page.on("console", lambda msg: "orderbus: subscription" in msg.text and warnings.append(msg.text))
    return warnings


def shows(page, selector: str, timeout_ms: float, what: str, system: ClusterSystem | None = None) -> None:
    """Wait for ``selector``; failing, say what the page's connection indicator says (and what
    the relay logged, given ``system``)."""
    try:
        page.wait_for_selector(selector, state="attached", timeout=timeout_ms)
    except Exception as exc:
        conn = page.eval_on_selector("#conn", "e => `${e.dataset.state}: ${e.textContent}`")
        relay = (system.tmp / "relay.log").read_text()[-3000:] if system else ""
        raise AssertionError(
            f"{what} not shown within {timeout_ms / 1000:.0f} s; the page says {conn!r}"
            + (f"\n--- relay.log\n{relay}" if relay else "")
        ) from exc


def kill_the_page_node(system: ClusterSystem, client_id: str) -> tuple[int, float]:
    """``kill -9`` of the node holding ``client_id``'s connection: (node, time of the kill)."""
    victim = wait_node_of(system, client_id, (1, 2, 3))
    system.cluster.stop(victim, signal.SIGKILL)
    return victim, time.monotonic()


def test_the_dashboard_shows_a_new_order_after_its_node_is_killed(browser, cluster: ClusterSystem) -> None:  # noqa: F811
    system = cluster
    with watched_context(browser, viewport={"width": 1366, "height": 900}) as context:
        page = context.new_page()
        warned = refusals(page)
        began = time.monotonic()
        open_dashboard(page, system)
        login = page.evaluate("() => JSON.parse(sessionStorage.getItem('orderbus.admin.session')).mqtt")
        assert len(login["urls"]) == 3, login  # every node: mqtt.js's `servers`
        client_id = login.get("client_id") or login["username"]
        first = place(system)  # the positive control, before the kill
        shows(page, f'#orders li[data-id="{first["id"]}"]', 20000, "the order placed before the kill")
        opened = time.monotonic() - began

        victim, killed = kill_the_page_node(system, client_id)
        order = place(system, "Grace")
        shows(page, f'#orders li[data-id="{order["id"]}"]', BACK_MS, "the order placed after the kill")
        shown = time.monotonic() - killed
        shows(page, '#conn[data-state="connected"]', BACK_MS, '"connected"')
        survivors = tuple(i for i in (1, 2, 3) if i != victim)
        now_on = wait_node_of(system, client_id, survivors)
        since = time.monotonic()
        live = place(system, "Linus")  # subscribed on the survivor: it comes live, not by a resync
        # Seen: 0.1-4 s alone, over 20 s in CI (the relay's publish waits for the retained
        # stream's new leader after the kill): bounded like the failover itself.
        shows(page, f'#orders li[data-id="{live["id"]}"]', ONCE_BACK_MS, "the order placed once back", system)
        print(
            f"[cluster pages] dashboard: open and live {opened:.1f} s; kill -9 of its node {victim}:"
            f" the next order on the board {shown:.1f} s later, connected to node {now_on}, where the"
            f" one after took {time.monotonic() - since:.1f} s;"
            f" subscription refusals met: {len(warned)}{' ' + repr(warned[-3:]) if warned else ''}"
        )


def test_the_courier_app_shows_an_assignment_after_its_node_is_killed(
    browser,  # noqa: F811
    cluster: ClusterSystem,
) -> None:
    system = cluster
    phone = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    with watched_context(browser, **phone) as context:
        agent = system.make_agent()
        first = system.ready_order()
        system.assign(first["id"], agent["id"])
        page = context.new_page()
        warned = refusals(page)
        began = time.monotonic()
        log_in(page, system, agent)
        card(page, first["id"], "ready")  # the positive control, before the kill
        opened = time.monotonic() - began
        key = f"orderbus.courier.mqtt.{agent['id']}"  # the device's broker login, kept by the app
        login = page.evaluate(f"() => JSON.parse(localStorage.getItem('{key}'))")
        assert len(login["ws_urls"]) == 3, login  # every node: mqtt.js's `servers`

        victim, killed = kill_the_page_node(system, login["client_id"])
        order = system.ready_order()
        system.assign(order["id"], agent["id"])
        shows(page, f'#orders li[data-id="{order["id"]}"]', BACK_MS, "the assignment made after the kill")
        shown = time.monotonic() - killed
        shows(page, '#conn[data-state="online"]', BACK_MS, '"Online"')
        survivors = tuple(i for i in (1, 2, 3) if i != victim)
        now_on = wait_node_of(system, login["client_id"], survivors)
        since = time.monotonic()
        after = system.ready_order()  # subscribed on the survivor: it comes live
        system.assign(after["id"], agent["id"])
        # Seen: 6.4 s alone, over 20 s beside another cluster test (the session's consumer on the
        # survivor settling after the kill): bounded like the failover itself.
        shows(
            page,
            f'#orders li[data-id="{after["id"]}"]',
            ONCE_BACK_MS,
            "the assignment made once back",
            system,
        )
        print(
            f"[cluster pages] courier app: logged in and live {opened:.1f} s; kill -9 of its node {victim}:"
            f" the new assignment on the worklist {shown:.1f} s later, connected to node {now_on}, where the"
            f" next took {time.monotonic() - since:.1f} s;"
            f" subscription refusals met: {len(warned)}{' ' + repr(warned[-3:]) if warned else ''}"
        )
