"""The customer CLI's watcher (clients/customer/watch.py) on feed messages: the version rule,
statuses reached in a gap, ETA changes, the end."""

from __future__ import annotations

from clients.customer.watch import Watcher, clock

T = "2026-01-01T10:{:02d}:00.000Z"


def feed(version: int, status: str, *, reached: tuple[str, ...], eta: str | None = None, **extra) -> dict:
    times = {s: T.format(i) for i, s in enumerate(reached)}
    order = {"id": "ord_1", "status": status, "status_times": times, "eta": eta, "courier": None}
    order.update({"failure": None, "reason": None, **extra})
    other = {**order, "id": "ord_2", "status": "placed", "status_times": {"placed": T.format(0)}}
    return {"version": version, "updated_at": T.format(30), "orders": [other, order]}


def test_each_status_once_in_order_older_versions_dropped_and_done_when_finished():
    lines: list[str] = []
    watcher = Watcher("ord_1", lines.append)
    watcher.offer(feed(3, "confirmed", reached=("placed", "confirmed")))
    watcher.offer(feed(2, "placed", reached=("placed",)))  # older: dropped
    watcher.offer(feed(3, "confirmed", reached=("placed", "confirmed")))  # equal: dropped
    assert [line.split()[1] for line in lines] == ["placed", "confirmed"]
    assert lines[0] == f"{clock(T.format(0))}  placed"
    # A reconnect's retained state skipped two steps: both are told, in order, from their times.
    eta = "2026-01-01T10:45:00.000Z"
    steps = ("placed", "confirmed", "preparing", "ready", "picked_up")
    watcher.offer(feed(7, "picked_up", reached=steps, eta=eta, courier={"first_name": "Sam"}))
    assert [line.split()[1] for line in lines[2:]] == ["preparing", "ready", "picked_up"]
    assert lines[-1].endswith(f"picked_up  ETA {clock(eta)}  with Sam")
    later = "2026-01-01T10:50:00.000Z"
    watcher.offer(feed(8, "picked_up", reached=steps, eta=later, courier={"first_name": "Sam"}))
    assert lines[-1] == f"{clock(T.format(30))}  ETA now {clock(later)}"
    assert not watcher.done.is_set()
    failure = {"reason": "customer_absent", "note": ""}
    watcher.offer(
        feed(9, "failed", reached=(*steps, "failed"), eta=later, failure=failure, reason="nobody home")
    )
    assert lines[-1].endswith("failed  (customer_absent)  reason: nobody home")
    assert watcher.done.is_set() and len(lines) == 7


def test_a_feed_without_the_order_changes_nothing():
    lines: list[str] = []
    watcher = Watcher("ord_9", lines.append)
    watcher.offer(feed(1, "placed", reached=("placed",)))
    assert lines == [] and not watcher.done.is_set()
    assert clock(None) == "?" and clock("not a time") == "?"
