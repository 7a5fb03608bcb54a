"""The benchmark machinery (`make bench`) at its smallest size, so that it cannot rot.

Speed is not asserted here (that is the benchmarks' job): only that every step runs on
the real peers and the report names what it measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import ROOT
from tests.conftest import BACKEND

pytestmark = pytest.mark.e2e

NODE_MODULES = ROOT / "clients" / "loadgen" / "node" / "node_modules"


def test_bench_smoke_profile_writes_a_report(tmp_path: Path) -> None:
    """The smoke profile runs B0, B2, B3 and B4 (rehydration) end to end and writes JSON and markdown."""
    _need_node()
    done = subprocess.run(
        [sys.executable, "-m", "clients.loadgen", "--profile", "smoke", "--out", str(tmp_path), "--no-plots"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    results = summary["results"]
    assert set(results) == {"B0", "B2", "B3", "B4"}
    assert all(row["lost"] == 0 for row in results["B2"]["summary"])
    # Latency counts from the scheduled send, or from the actual send when that was early:
    # never below zero (a message sent up to 1 ms early once gave Mosquitto a p50 of -0.1 ms).
    assert all(row["latency_ms"]["p50"] >= 0 for row in results["B2"]["summary"])
    # Each side's CPU per copy (both read to the microsecond or finer): neither is nothing.
    assert all(row["client_cpu_us_per_copy"] > 0 for row in results["B2"]["summary"])
    assert all(row["server_cpu_us_per_copy"] > 0 for row in results["B2"]["summary"])
    c1 = next(row for row in results["B3"]["summary"] if row["rate"] is None)
    assert c1["lost"] == 0 and c1["errors"] == 0 and c1["receipt_ms"]["p50"] > 0
    # Each of the system's processes worked for the orders, and the load generator too.
    assert {"api workers", "relay", "broker"} <= set(c1["cpu_ms_per_order"])
    assert all(ms > 0 for name, ms in c1["cpu_ms_per_order"].items() if name != "api")
    assert c1["load_generator_cpu_ms_per_order"] > 0
    rehydration = results["B4"]["summary"][0]
    assert rehydration["converged_reps"] == rehydration["reps"] == 1
    assert all("start" in span and "end" in span for span in results["B0"]["load_average"])
    report = (tmp_path / "README.md").read_text()
    assert "## Targets" in report and "## B2 fan-out" in report


def test_backlog_counts_every_version_the_offline_agent_gets(tmp_path: Path) -> None:
    """B5 at its smallest: the agent's first reconnect after 3 assignments gets every version
    queued while it was away (not just the retained one) and holds all 3 orders."""
    _need_node()
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "clients.loadgen", "--profile", "smoke", "--only", "B5"),
            *("--out", str(tmp_path), "--no-plots"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert set(results) == {"B5"}
    assert "summary" in results["B5"], (results["B5"], done.stderr[-3000:])  # the run's error, its log
    row = results["B5"]["summary"][0]
    assert (row["assignments"], row["assigned"], row["refused"], row["complete"]) == (3, 3, 0, True), row
    assert row["messages"] >= 3, row  # versions 2, 3 and 4 queued, then the retained copy


def test_cpu_tool_reports_each_process_per_request() -> None:
    """python -m clients.loadgen.cpu runs the real system and names the CPU time of the API
    worker, the relay and the broker for an order, the bench's (an admin's) and a customer's."""
    done = subprocess.run(
        [sys.executable, "-m", "clients.loadgen.cpu", "-n", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for request in ("POST /api/v1/orders:", "PATCH /api/v1/orders/<id>/status", "as a customer"):
        write = done.stdout.split(request, 1)[1]
        for process in ("api worker", "relay", "broker", "total"):
            assert process in write, done.stdout


@pytest.mark.skipif(BACKEND != "postgresql", reason="the production peer runs on PostgreSQL")
def test_cpu_tool_counts_postgresql_and_mosquitto_in_production(database_url: str) -> None:
    """--production: the production peer, and the CPU of Mosquitto and of the PostgreSQL
    backends serving the API and the relay (each named by the process it serves). (It makes
    a database of its own; ``database_url`` puts it in the PostgreSQL pass.)"""
    done = subprocess.run(
        [sys.executable, "-m", "clients.loadgen.cpu", "-n", "30", "--production"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    write = done.stdout.split("POST /api/v1/orders", 1)[1]
    for process in ("api worker", "relay", "mosquitto", "pg for api", "pg for relay-data", "total"):
        assert process in write, done.stdout
    assert "broker " not in write, done.stdout  # Mosquitto in place of the embedded broker


def test_cpu_tool_profiles_each_process_with_py_spy(tmp_path: Path) -> None:
    """--profile samples every process during the POSTs and the PATCHes: raw stacks per
    process, and the summary names each handler in the API worker's frames."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        pytest.skip("py-spy is a bench extra: pip install -e '.[bench]'")
    done = subprocess.run(
        [sys.executable, "-m", "clients.loadgen.cpu", "-n", "200", "--profile", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = {p.stem for p in (tmp_path / "post").glob("*.txt")}
    assert {"relay", "broker"} <= written and any(name.startswith("api-worker") for name in written), written
    shop = "".join(p.read_text() for p in (tmp_path / "post-customer").glob("api-worker*.txt"))
    # The customer's order builds the customer's feed; the admin's builds none.
    feed = ";customer_feed (order_service/orders/feed.py)"
    assert feed in shop
    assert feed not in "".join(p.read_text() for p in (tmp_path / "post").glob("api*.txt"))
    # The services of both writes, under the API's fast path (or Flask's views with it off).
    assert "create_order (order_service/orders/service.py)" in done.stdout, done.stdout[-3000:]
    assert "change_status (order_service/orders/service.py)" in done.stdout, done.stdout[-3000:]


def _need_node() -> None:
    if shutil.which("node") is None or not NODE_MODULES.exists():
        if os.environ.get("CI"):
            pytest.fail("the benchmark load generator needs node and `npm ci` in clients/loadgen/node")
        pytest.skip("node or clients/loadgen/node/node_modules missing (make node-test-deps)")


def test_brokers_option_refuses_an_unknown_broker(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clients.loadgen", "--brokers", "embedded,rabbit", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "unknown broker 'rabbit'" in done.stderr
    assert not (tmp_path / "results.json").exists()
