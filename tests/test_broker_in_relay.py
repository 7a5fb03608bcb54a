"""``ORDERBUS_BROKER_IN_RELAY=true``: the relay process runs the embedded broker and hands it
each message directly (order_service/relay.py), in place of a broker process and an MQTT hop.

The system runs as a user would run it so (harness/system.py: no ``broker`` process), a
dashboard (a paho client over TCP) counts what it receives against the event log
(tests/chaos.py), and the process is killed (SIGKILL) with orders streaming: the broker's
sessions and retained store die with it, the restarted relay republishes the state, and
nothing is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import stop_group
from harness.system import System, make_system
from tests.chaos import SCALE, Workload, scenario, while_down

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180 * SCALE)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    made = make_system(
        tmp_path_factory.mktemp("in-relay"),
        ORDERBUS_BROKER_IN_RELAY="true",
        ORDERBUS_MQTT_KEEPALIVE="5",
        ORDERBUS_RELAY_POLL_SECONDS="0.2",
    )
    try:
        yield made
    finally:
        made.close()


def relay_log(system: System) -> str:
    return (system.tmp / "relay.log").read_text()


def test_orders_reach_a_dashboard_through_the_broker_in_the_relay(system: System) -> None:
    assert set(system.procs) == {"relay", "api"}  # no broker process
    assert "the embedded broker runs in this process" in relay_log(system)
    counts = scenario(system, "broker in the relay, no fault", lambda work: None)
    assert counts.delivered > 0 and counts.lost == 0


def test_the_relay_killed_with_its_broker_loses_nothing(system: System) -> None:
    """kill -9 of the one process: the broker's retained store and sessions are gone with it,
    the API goes on writing the outbox, and the relay started again republishes the state."""
    before = relay_log(system).count("republished the state of")

    def fault(work: Workload) -> None:
        proc = system.procs.pop("relay")
        stop_group(proc, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        while_down(work)
        system.start("relay")

    scenario(system, "relay with its broker kill -9", fault)
    assert relay_log(system).count("republished the state of") > before  # the store was refilled


def test_a_relay_told_to_run_the_broker_but_publishing_elsewhere_says_so(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ORDERBUS_DATA_DIR": str(tmp_path),
        "ORDERBUS_BROKER_IN_RELAY": "true",
        "ORDERBUS_BROKER_PORT": "21999",
        "ORDERBUS_MQTT_URL": "mqtt://127.0.0.1:21998",
    }
    done = subprocess.run(
        [sys.executable, "-m", "order_service.relay"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ORDERBUS_BROKER_IN_RELAY runs the embedded broker on 127.0.0.1:21999" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
