"""`python -m clients.simulate` against the real API, relay and broker."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import ROOT

pytestmark = pytest.mark.e2e


def test_simulator_creates_agents_and_moves_orders_through_their_lifecycle(live_system):
    system = live_system
    result = subprocess.run(
        [
            sys.executable, "-m", "clients.simulate", "--json", "--api", system.api_url,
            "--password-file", str(Path(system.env["ORDERBUS_DATA_DIR"]) / "admin-password"),
            "--agents", "2", "--orders", "6", "--rate", "10", "--step", "0", "--cancel-every", "3",
        ],
        env=system.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["counts"] == {"placed": 6, "assigned": 6, "delivered": 4, "cancelled": 2}
    assert "placed 6/6" in result.stderr  # the progress line
    listed = system.admin.request("GET", "/orders?limit=50")["orders"]
    assert sorted(o["status"] for o in listed) == ["cancelled"] * 2 + ["delivered"] * 4
    agents = {a["id"] for a in system.admin.request("GET", "/agents")["agents"]}
    assert {a["id"] for a in report["agents"]} <= agents and len(report["agents"]) == 2


@pytest.mark.parametrize("around", ["nonsense", "91,0", "52.5"])
def test_a_bad_starting_point_is_refused_before_anything_is_created(around):
    result = subprocess.run(
        [sys.executable, "-m", "clients.simulate", "--password", "x", "--ride", "5", "--around", around],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--around" in result.stderr
    assert "LAT,LON" in result.stderr or "latitude" in result.stderr


def test_riding_couriers_report_their_position_and_leave_a_trail(live_system):
    """With --ride, the courier rides to the order's delivery location between picked up and
    delivered, reporting over MQTT with its own login: the service keeps the trail."""
    system = live_system
    result = subprocess.run(
        [
            sys.executable, "-m", "clients.simulate", "--json", "--api", system.api_url,
            "--password-file", str(Path(system.env["ORDERBUS_DATA_DIR"]) / "admin-password"),
            "--agents", "1", "--orders", "1", "--step", "0", "--ride", "6", "--around", "48.8566,2.3522",
        ],
        env=system.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["counts"] == {"placed": 1, "assigned": 1, "delivered": 1}
    (order,) = system.admin.request("GET", "/orders?limit=5")["orders"]
    to = order["delivery_location"]
    assert 0.5 <= _km((48.8566, 2.3522), (to["lat"], to["lon"])) <= 2.6
    points = system.admin.request("GET", f"/orders/{order['id']}/trail")["points"]
    assert len(points) >= 2, points  # one report per second, at most one per 2 s kept
    start = (points[0]["lat"], points[0]["lon"])
    assert _km(start, (48.8566, 2.3522)) < _km(start, (to["lat"], to["lon"]))  # it set off from the shop


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat, dlon = math.radians(b[0] - a[0]), math.radians(b[1] - a[1])
    h = (
        math.sin(dlat / 2) ** 2
        + math.cos(math.radians(a[0])) * math.cos(math.radians(b[0])) * math.sin(dlon / 2) ** 2
    )
    return 6371 * 2 * math.asin(math.sqrt(h))
