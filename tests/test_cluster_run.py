"""`make run-cluster` as a new user runs it: Procfile.cluster on PostgreSQL, ports moved by ORDERBUS_*.

Three NATS nodes (the ``cluster`` extra's nats-server), the API, two relays and the bridges.
The broker logins the API hands out list every node; an order reaches a dashboard login
on another node; ``kill -9`` of the relay's node: the relay moves to another node, the next
change still reaches the dashboard, the node comes back in its restart loop. Runs in the
PostgreSQL pass only (the path runs on PostgreSQL).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cluster import cluster_env
from harness.processes import ROOT, free_ports, stop_group
from tests.cluster_fixtures import Device, require_nats
from tests.conftest import BACKEND
from tests.test_processes import ORDER, http
from tests.test_production import http_status, wait_log

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
VENV = Path(sys.prefix)


@pytest.mark.skipif(BACKEND != "postgresql", reason="make run-cluster runs on PostgreSQL")
def test_make_run_cluster(tmp_path: Path, database_url: str):
    require_nats()
    api_port, socketio_port = free_ports(2)
    env = cluster_env(
        tmp_path / "var",
        ORDERBUS_DATABASE_URL=database_url,
        ORDERBUS_API_PORT=str(api_port),
        ORDERBUS_SOCKETIO_PORT=str(socketio_port),
        ORDERBUS_API_WORKERS="2",
    )
    log = tmp_path / "run-cluster.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", f"VENV={VENV}", "run-cluster"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dashboard = None
    try:
        # Any node: a relay refused at first (its node's callout not yet answering) goes to the next.
        relay_at = r"relay\d\.1 +\| .*relay connected to mqtt://127\.0\.0\.1:(\d+)"
        wait_log(log, relay_at, 120)
        api = f"http://127.0.0.1:{api_port}/api/v1"
        deadline = time.monotonic() + 60
        while http_status(f"{api}/readyz") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.3)
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        login = http("POST", f"{api}/auth/token", {"username": "admin", "password": password})[1]
        mqtt, token = login["mqtt"], login["access_token"]
        base, ws = int(env["ORDERBUS_BROKER_PORT"]), int(env["ORDERBUS_BROKER_WS_PORT"])
        assert mqtt["tcp_urls"] == [f"mqtt://127.0.0.1:{base + i}" for i in range(3)]
        assert mqtt["urls"] == [f"ws://127.0.0.1:{ws + i}/mqtt" for i in range(3)]
        # The relay's node (the latest it connected to) is the one killed; the dashboard is on another.
        victim = int(re.findall(relay_at, log.read_text())[-1]) - base + 1
        watcher = 3 if victim != 3 else 2
        dashboard = Device(mqtt["tcp_urls"][watcher - 1], mqtt["username"], mqtt["password"]).start()
        assert dashboard.subscribe("orders/#") in (0, 1)
        status, created = http("POST", f"{api}/orders", ORDER, token)
        assert status == 201, created
        dashboard.wait_for("orders/new", contains=created["id"].encode(), timeout=20)

        pid_file = tmp_path / "var" / "nats" / f"node{victim}.pid"
        pid = int(pid_file.read_text().strip())
        assert Path(f"/proc/{pid}/cmdline").read_bytes().endswith(f"node{victim}.conf\0".encode())  # ours
        before = log.read_text().count("relay connected to")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        status, changed = http(
            "PATCH", f"{api}/orders/{created['id']}/status", {"status": "confirmed"}, token
        )
        assert status == 200, changed
        dashboard.wait_for(f"orders/{created['id']}/status", contains=b'"status":"confirmed"', timeout=60)
        moved = time.monotonic() - killed
        assert log.read_text().count("relay connected to") > before
        wait_log(log, rf"node {victim} exited \(137\), restarting", 20)
        assert proc.poll() is None, "honcho stopped the system when a node died"
        print(f"\nmake run-cluster: node {victim} killed, the change reached node {watcher} {moved:.1f} s on")
    finally:
        if dashboard is not None:
            dashboard.stop()
        stop_group(proc)
