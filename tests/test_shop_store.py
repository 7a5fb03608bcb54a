"""The shop's merge rule for its orders (clients/shop/js/store.js), run by Node: REST answers
and the customer's feed arrive in any order, and the page shows each order's newest state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from harness.processes import ROOT

STORE = ROOT / "clients" / "shop" / "js" / "store.js"

# Each case: copies applied in turn (("rest", order) or ("feed", snapshot)); the state shown after.
SCRIPT = """
import { Orders } from %(store)s;
const out = [];
for (const steps of %(cases)s) {
  const orders = new Orders();
  for (const [kind, body] of steps) kind === "rest" ? orders.apply(body) : orders.applySnapshot(body);
  out.push(orders.list().map((o) => [o.id, o.status, o.version ?? null, o.courier?.first_name ?? null]));
}
console.log(JSON.stringify(out));
"""


def run(cases: list[list[tuple[str, dict]]]) -> list:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the shop's store test needs Node.js")
        pytest.skip("the shop's store test needs Node.js")
    source = SCRIPT % {"store": json.dumps(STORE.as_uri()), "cases": json.dumps(cases)}
    done = subprocess.run(
        [node, "--input-type=module", "-e", source], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout)


def order(status: str, version: int | None = None, **extra) -> dict:
    body = {"id": "ord_1", "status": status, "created_at": "2026-12-05T07:00:00Z", **extra}
    if version is not None:
        body["version"] = version
    return body


def feed(version: int, *orders: dict) -> dict:
    return {"version": version, "orders": list(orders)}


def test_the_newest_state_wins_whatever_the_order_of_arrival() -> None:
    """A REST answer that left before a feed message came cannot take the order back; an older
    feed snapshot is ignored; the courier's name goes once the order is no longer on its way."""
    on_way = order("picked_up", courier={"first_name": "Sam"})
    shown = run(
        [
            # REST (preparing) answered after the feed said ready: ready stays.
            [
                ("rest", order("confirmed", 2)),
                ("feed", feed(5, order("ready"))),
                ("rest", order("preparing", 3)),
            ],
            # The positive control: a later REST copy further along is taken, its version kept.
            [("feed", feed(5, order("ready"))), ("rest", order("picked_up", 5))],
            # An older feed snapshot (version 4 after 6) changes nothing.
            [
                ("feed", feed(6, on_way)),
                ("feed", feed(4, order("placed"))),
            ],
            # Delivered: the courier's name is gone even though the REST copy says nothing of it.
            [
                ("feed", feed(6, on_way)),
                ("rest", order("delivered", 6)),
            ],
            # A lower version of the same status is older.
            [("rest", order("confirmed", 3, eta="late")), ("rest", order("confirmed", 2, eta="early"))],
        ]
    )
    assert shown == [
        [["ord_1", "ready", 2, None]],
        [["ord_1", "picked_up", 5, None]],
        [["ord_1", "picked_up", None, "Sam"]],
        [["ord_1", "delivered", 6, None]],
        [["ord_1", "confirmed", 3, None]],
    ]
