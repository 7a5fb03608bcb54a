"""`python -m clients.customer` against the real API process."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

from clients.rest import Api
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


def make_menu(system: System) -> dict:
    """Tea (3.50, option Lemon +0.20) and Cake (4.00, sold out), made by the admin."""
    drinks = system.admin.request("POST", "/catalog/categories", {"name": "Drinks"})
    tea = system.admin.request(
        "POST",
        "/catalog/items",
        {
            "category_id": drinks["id"],
            "name": "Tea",
            "price_cents": 350,
            "options": [{"name": "Lemon", "price_delta_cents": 20}],
        },
    )
    cake = {"category_id": drinks["id"], "name": "Cake", "price_cents": 400, "available": False}
    return {"tea": tea, "cake": system.admin.request("POST", "/catalog/items", cake)}


def test_round_trip_place_list_show_cancel(live_system):
    """The customer orders from the catalog by name (the server prices it), by id with an
    option, lists, shows (with the order's #number) and cancels."""
    system = live_system
    menu = make_menu(system)
    ada = system.make_customer()
    shown_menu = customer(system, ada, "menu", password="not-the-password")  # public: no login
    assert shown_menu.returncode == 0, shown_menu.stderr
    assert (
        "Tea" in shown_menu.stdout and "3.50 EUR" in shown_menu.stdout and "(sold out)" in shown_menu.stdout
    )
    placed = customer(system, ada, "--json", *PLACE, "--item", "tea:2", "--key", "k-1")
    assert placed.returncode == 0, placed.stderr
    order = json.loads(placed.stdout)
    assert order["status"] == "placed" and order["total_cents"] == 700 and order["number"] == 1
    assert order["items"][0]["item_id"] == menu["tea"]["id"]

    with_lemon = customer(system, ada, *PLACE, "--item", f"{menu['tea']['id']}:1:Lemon")
    assert with_lemon.returncode == 0, with_lemon.stderr
    assert "#2 " in with_lemon.stdout and "1 x Tea (Lemon) @ 3.70 EUR" in with_lemon.stdout

    again = customer(system, ada, "--json", *PLACE, "--item", "tea:2", "--key", "k-1")
    assert json.loads(again.stdout)["id"] == order["id"]  # the idempotency key: no second order

    listed = customer(system, ada, "list")
    assert listed.returncode == 0 and order["id"] in listed.stdout and listed.stdout.count("ord") >= 1
    assert "#1 " in listed.stdout
    assert len(json.loads(customer(system, ada, "--json", "list").stdout)["orders"]) == 2

    shown = customer(system, ada, "show", order["id"])
    assert shown.returncode == 0 and "placed" in shown.stdout and "2 x Tea" in shown.stdout
    assert shown.stdout.startswith(f"#1  {order['id']}")

    cancelled = customer(system, ada, "cancel", order["id"], "--reason", "changed my mind")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout


def test_helpful_errors_for_invalid_input_401_and_409(live_system):
    system = live_system
    make_menu(system)
    ada = system.make_customer()

    bad_format = customer(system, ada, *PLACE, "--item", "Tea:two")
    assert bad_format.returncode == 2 and "ITEM[:QUANTITY[:OPTION,OPTION]]" in bad_format.stderr
    unknown = customer(system, ada, *PLACE, "--item", "Coffee")
    assert unknown.returncode == 2 and "there is no item 'Coffee'; known: Cake, Tea" in unknown.stderr
    no_option = customer(system, ada, *PLACE, "--item", "Tea:1:Milk")
    assert no_option.returncode == 2 and "option of Tea 'Milk'" in no_option.stderr

    bad_value = customer(system, ada, *PLACE, "--item", "Tea:0")
    assert bad_value.returncode == 1
    assert "quantity" in bad_value.stderr and "Traceback" not in bad_value.stderr
    sold_out = customer(system, ada, *PLACE, "--item", "Cake")
    assert sold_out.returncode == 1 and "(409)" in sold_out.stderr and "'Cake' is sold out" in sold_out.stderr

    wrong_password = customer(system, ada, "list", password="not-the-password")
    assert wrong_password.returncode == 1
    assert "401" in wrong_password.stderr and "wrong username or password" in wrong_password.stderr

    order = json.loads(customer(system, ada, "--json", *PLACE, "--item", "Tea").stdout)
    system.admin.request("PATCH", f"/orders/{order['id']}/status", {"status": "confirmed"})
    too_late = customer(system, ada, "cancel", order["id"])
    assert too_late.returncode == 1 and "Traceback" not in too_late.stderr
    assert "403" in too_late.stderr and "you may: nothing more" in too_late.stderr

    other = json.loads(customer(system, ada, "--json", *PLACE, "--item", "Tea").stdout)
    assert customer(system, ada, "cancel", other["id"]).returncode == 0
    twice = customer(system, ada, "cancel", other["id"])
    assert twice.returncode == 1 and "Traceback" not in twice.stderr
    assert "(409)" in twice.stderr and "cannot move to 'cancelled'" in twice.stderr
    assert "allowed next: none (the order is finished)" in twice.stderr


class Watch:
    """``python -m clients.customer watch ORDER`` running; its output lines read as they come."""

    def __init__(self, system: System, who: dict, order_id: str, *args: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clients.customer", "--api", system.api_url, "--user", who["username"]]
            + ["watch", order_id, *args],
            env={**system.env, "ORDERBUS_CUSTOMER_PASSWORD": who["password"]},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, *words: str, timeout: float = 20.0) -> str:
        """The first line (seen or new) that holds every word; an AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [seen for seen in self.seen if all(w in seen for w in words)]
            if found:
                return found[0]
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line with {words} within {timeout} s; got {self.seen}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_watch_follows_an_order_live_to_delivery_across_a_broker_restart(live_system):
    """watch prints each status with its time (the ETA and the courier's first name once picked up),
    keeps going when the broker restarts empty, and exits 0 once the order is delivered."""
    system = live_system
    make_menu(system)
    ada = system.make_customer()
    placed = customer(system, ada, "--json", *PLACE, "--item", "Tea:2")
    assert placed.returncode == 0, placed.stderr
    order_id = json.loads(placed.stdout)["id"]
    rider = system.make_agent()
    courier = Api(system.api_url)
    courier.login(rider["username"], rider["password"])
    watch = Watch(system, ada, order_id)
    try:
        assert re.search(r"^\d\d:\d\d:\d\d  placed$", watch.line("placed"))  # the retained feed: subscribed
        system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "confirmed"})
        watch.line("confirmed")
        system.stop("broker")  # the embedded broker keeps nothing: the relay republishes the feed
        system.start("broker")
        system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "preparing"})
        watch.line("preparing")
        system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "ready"})
        system.assign(order_id, rider["id"])
        watch.line("ready")
        courier.request("PATCH", f"/orders/{order_id}/status", {"status": "picked_up"})
        picked = watch.line("picked_up")
        assert "ETA" in picked and "with Rider" in picked, picked
        courier.request("PATCH", f"/orders/{order_id}/status", {"status": "delivered"})
        watch.line("delivered")
        assert watch.proc.wait(20) == 0
        statuses = [line.split()[1] for line in watch.seen if re.match(r"^\d\d:\d\d:\d\d  ", line)]
        assert statuses == ["placed", "confirmed", "preparing", "ready", "picked_up", "delivered"], watch.seen
    finally:
        watch.stop()


def test_watch_of_a_finished_order_exits_at_once_and_of_anothers_order_fails(live_system):
    system = live_system
    make_menu(system)
    ada, bob = system.make_customer(), system.make_customer()
    placed = customer(system, ada, "--json", *PLACE, "--item", "Tea:1")
    order_id = json.loads(placed.stdout)["id"]
    assert customer(system, ada, "cancel", order_id, "--reason", "changed my mind").returncode == 0
    done = customer(system, ada, "watch", order_id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["placed", "cancelled"], lines
    theirs = customer(system, bob, "watch", order_id, "--timeout", "5")
    assert theirs.returncode == 1 and "404" in theirs.stderr  # bob may not see ada's order
