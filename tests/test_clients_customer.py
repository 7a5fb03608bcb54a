"""`python -m clients.customer` against the real API process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.processes import ROOT
from harness.system import System

pytestmark = pytest.mark.e2e


def customer(
    system: System, who: dict, *args: str, password: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clients.customer", "--api", system.api_url, "--user", who["username"], *args],
        env={**system.env, "ORDERBUS_CUSTOMER_PASSWORD": password or who["password"]},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


PLACE = (
    "place",
    "--name",
    "Ada",
    "--phone",
    "+1 555 0100",
    "--address",
    "1 Main St",
    "--notes",
    "ring twice",
)


def test_round_trip_place_list_show_cancel(live_system):
    system = live_system
    ada = system.make_customer()
    placed = customer(system, ada, "--json", *PLACE, "--item", "Tea:2:3.50", "--key", "k-1")
    assert placed.returncode == 0, placed.stderr
    order = json.loads(placed.stdout)
    assert order["status"] == "placed" and order["total_cents"] == 700

    again = customer(system, ada, "--json", *PLACE, "--item", "Tea:2:3.50", "--key", "k-1")
    assert json.loads(again.stdout)["id"] == order["id"]  # the idempotency key: no second order

    listed = customer(system, ada, "list")
    assert listed.returncode == 0 and order["id"] in listed.stdout and listed.stdout.count("ord") >= 1
    assert len(json.loads(customer(system, ada, "--json", "list").stdout)["orders"]) == 1

    shown = customer(system, ada, "show", order["id"])
    assert shown.returncode == 0 and "placed" in shown.stdout and "2 x Tea" in shown.stdout

    cancelled = customer(system, ada, "cancel", order["id"], "--reason", "changed my mind")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout


def test_helpful_errors_for_invalid_input_401_and_409(live_system):
    system = live_system
    ada = system.make_customer()

    bad_format = customer(system, ada, *PLACE, "--item", "Tea")
    assert bad_format.returncode == 2 and "NAME:QUANTITY:UNIT_PRICE" in bad_format.stderr

    bad_value = customer(system, ada, *PLACE, "--item", "Tea:0:3.50")
    assert bad_value.returncode == 1
    assert "quantity" in bad_value.stderr and "Traceback" not in bad_value.stderr

    wrong_password = customer(system, ada, "list", password="not-the-password")
    assert wrong_password.returncode == 1
    assert "401" in wrong_password.stderr and "wrong username or password" in wrong_password.stderr

    order = json.loads(customer(system, ada, "--json", *PLACE, "--item", "Tea:1:3").stdout)
    system.admin.request("PATCH", f"/orders/{order['id']}/status", {"status": "confirmed"})
    too_late = customer(system, ada, "cancel", order["id"])
    assert too_late.returncode == 1 and "Traceback" not in too_late.stderr
    assert "403" in too_late.stderr and "you may: nothing more" in too_late.stderr

    other = json.loads(customer(system, ada, "--json", *PLACE, "--item", "Tea:1:3").stdout)
    assert customer(system, ada, "cancel", other["id"]).returncode == 0
    twice = customer(system, ada, "cancel", other["id"])
    assert twice.returncode == 1 and "Traceback" not in twice.stderr
    assert "(409)" in twice.stderr and "cannot move to 'cancelled'" in twice.stderr
    assert "allowed next: none (the order is finished)" in twice.stderr
