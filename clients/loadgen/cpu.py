"""CPU time per request, per process of the system: ``python -m clients.loadgen.cpu``.

Starts the embedded system (broker, relay, API under granian) on free ports, sends each
request one at a time over one keep-alive connection, and reads every process's CPU time
(user + system, from /proc/<pid>/stat) before and after. It shows where the time of one
order goes (docs/benchmarks/README.md, "Where the time of one order goes").

    python -m clients.loadgen.cpu -n 1000
    python -m clients.loadgen.cpu -n 1000 --profile var/profile   # and where in the code
    python -m clients.loadgen.cpu -n 1000 --set ORDERBUS_API_FAST_PATH=false  # Flask for all
    python -m clients.loadgen.cpu -n 1000 --production  # PostgreSQL and Mosquitto

With ``--production`` the system is the production profile's (a database of its own on the
PostgreSQL server of ``ORDERBUS_TEST_POSTGRES_URL`` or the local one, Mosquitto from the
repository's ``mosquitto.conf``), and the figures include Mosquitto and PostgreSQL: the
backends serving that database and the server's background processes (WAL writer,
checkpointer and the rest, shared with any other database on the server).

With ``--profile DIR`` every process is sampled by py-spy (``pip install -e '.[bench]'``)
while the POSTs and the PATCHes run: ``DIR/post/<process>.txt``, ``DIR/patch/...`` and
``DIR/post-customer/...`` (the customer's POSTs) hold
the raw stacks (one line per stack and its count, the input of any flame graph tool), of
samples that held the GIL (Python's own CPU time), and the top frames of each are printed,
by their own time and with their callees. Sampling slows the processes down, so the CPU
figures of a profiled run are not the ones to quote.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import click

from clients.rest import Api

from .peers import Peer, SystemPeer, processes
from .suite import ORDER

TICKS = os.sysconf("SC_CLK_TCK")
WRITES = ("POST", "PATCH")  # the requests --profile samples


def cpu_seconds(pid: int | list[int]) -> float:
    """CPU time of the process's live threads, to the nanosecond (``schedstat``; ``stat``'s
    utime + stime count whole clock ticks of 10 ms, too coarse for a short run); of several
    processes, their sum (a process that ended meanwhile counts nothing)."""
    if isinstance(pid, list):
        return sum(cpu_seconds(one) for one in pid if Path(f"/proc/{one}").exists())
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError, IndexError):  # no schedstat in this kernel
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise click.ClickException("--profile needs py-spy: pip install -e '.[bench]'")
    return found


@contextlib.contextmanager
def profiling(directory: Path | None, pids: dict[str, int | list[int]]):  # type: ignore[no-untyped-def]
    """Sample every process with py-spy while the block runs (nothing when ``directory`` is None)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = {
        name: subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--nolineno",
                "--gil",
                "--rate",
                "1000",
                "--output",
                str(directory / f"{name.replace(' ', '-')}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name, pid in pids.items()
        if isinstance(pid, int) and name != "mosquitto"  # py-spy samples Python processes
    }
    time.sleep(1.0)  # py-spy attaches
    for name, spy in spies.items():
        if spy.poll() is not None:
            raise click.ClickException(f"py-spy on {name}: {spy.stderr.read().decode().strip()}")  # type: ignore[union-attr]
    try:
        yield
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies.values():
            try:
                spy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                spy.kill()


# Frames every stack of a thread passes through: left out of the "with callees" list.
SCAFFOLDING = (
    "(threading.py)",
    "(concurrent/futures/thread.py)",
    "(asyncio/runners.py)",
    "<module>",
    "main (",
)


def summary(raw: Path, top: int = 12) -> list[str]:
    """The ``top`` frames of a py-spy raw file by their own share of the samples, and by
    their share with their callees (each frame counted once per stack). The samples are
    those that held the GIL: Python's own CPU time, without waits and without C code
    that lets the GIL go (SQLite's statements, the fsync)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(part in frame for part in SCAFFOLDING):
                inclusive[frame] += n
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  with callees:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


Request = tuple[str, str, str, str | None, dict[str, str]]  # label, method, path, body, headers


def requests_of(peer: Peer) -> tuple[str, int, list[Request]]:
    """Host, port and the requests measured: for our system GET /healthz, GET /orders,
    POST /orders (the bench's order, an admin's), a status change (PATCH /orders/<id>/status,
    confirming each order the POSTs placed) and a customer's POST /orders of a catalog item,
    as the shop sends it; for the seed-style Node server its POST /api/orders."""
    headers = {"Content-Type": "application/json"}
    body = json.dumps(ORDER)
    if not isinstance(peer, SystemPeer):
        return "127.0.0.1", peer.port, [("POST /api/orders", "POST", "/api/orders", body, headers)]
    api = urlsplit(peer.api)
    admin = {**headers, "Authorization": f"Bearer {peer.login['access_token']}"}
    token, shop_order = customer_order(peer)
    confirm = json.dumps({"status": "confirmed"})
    kinds: list[Request] = [
        ("GET /api/v1/healthz", "GET", "/api/v1/healthz", None, admin),
        ("GET /api/v1/orders?limit=1", "GET", "/api/v1/orders?limit=1", None, admin),
        ("POST /api/v1/orders", "POST", "/api/v1/orders", body, admin),
        ("PATCH /api/v1/orders/<id>/status", "PATCH", "/api/v1/orders/{}/status", confirm, admin),
        (
            "POST /api/v1/orders as a customer",
            "POST",
            "/api/v1/orders",
            shop_order,
            {**headers, "Authorization": f"Bearer {token}"},
        ),
    ]
    return str(api.hostname), int(api.port or 80), kinds


def customer_order(peer: SystemPeer) -> tuple[str, str]:
    """A customer's bearer token and the body of an order of one catalog item. Unlike the
    admin's, a customer's order also writes the customer's feed (``customers/<id>/orders``),
    here the full feed of a customer with 20 orders (the feed's limit) after the warm-up."""
    admin = Api(peer.api, peer.login["access_token"])
    category = admin.request("POST", "/catalog/categories", {"name": "Bench"})["id"]
    item = {"category_id": category, "name": "Margherita", "price_cents": 1299}
    item_id = admin.request("POST", "/catalog/items", item)["id"]
    customer = Api(peer.api)
    customer.request("POST", "/auth/signup", {"username": "bench-customer", "password": "bench-password-1"})
    token = customer.login("bench-customer", "bench-password-1")["access_token"]
    return token, json.dumps({"customer": ORDER["customer"], "items": [{"item_id": item_id, "quantity": 1}]})


def measure(peer: Peer, count: int, profile_dir: Path | None = None) -> list[dict]:
    """Per request kind: the response p50, the HTTP errors (an error status or no answer) and
    each process's CPU milliseconds per request, over ``count`` requests one at a time on a
    kept-alive connection after a warm-up of a tenth as many."""
    host, port, kinds = requests_of(peer)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    errors = 0
    placed: list[str] = []  # the orders the POSTs created, which the PATCHes confirm

    def send(method: str, path: str, data: str | None, headers: dict[str, str], n: int) -> list[float]:
        nonlocal conn, errors
        took = []
        for _ in range(n):
            started = time.perf_counter()
            try:
                target = path.format(placed.pop(0)) if "{}" in path else path
                conn.request(method, target, data, headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):  # no answer (status 0): a new connection
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            if response.status >= 300:
                errors += 1
            elif method == "POST" and isinstance(peer, SystemPeer):
                placed.append(json.loads(answer)["id"])
            took.append((time.perf_counter() - started) * 1000)
        return took

    results = []
    for label, method, path, data, headers in kinds:
        send(method, path, data, headers, max(20, count // 10))  # warm-up
        errors = 0
        pids = processes(peer)  # after the warm-up: the database connections it opened too
        folder = "post-customer" if label.endswith("customer") else method.lower()
        sampled = profile_dir / folder if profile_dir and method in WRITES else None
        with profiling(sampled, pids):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            took = send(method, path, data, headers, count)
            time.sleep(0.5)  # the relay and the broker finish the last order
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        used = {name: round((after[name] - before[name]) * 1000 / count, 3) for name in pids}
        results.append(
            {
                "request": label,
                "count": count,
                "errors": errors,
                "response_p50_ms": round(statistics.median(took), 3) if took else None,
                "cpu_ms": used,
                "total_cpu_ms": round(sum(used.values()), 3),
            }
        )
    conn.close()
    return results


@click.command()
@click.option("-n", "--count", default=1000, show_default=True, help="requests per kind")
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="sample every process with py-spy during the POSTs and the PATCHes and write its stacks here",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="ORDERBUS_NAME=VALUE",
    help="a setting of the system under test (repeatable), e.g. ORDERBUS_API_FAST_PATH=false",
)
@click.option(
    "--production",
    is_flag=True,
    help="the bench's production peer: PostgreSQL and Mosquitto, their CPU included",
)
def main(count: int, profile_dir: Path | None, settings: tuple[str, ...], production: bool) -> None:
    """CPU milliseconds per request of GET /healthz, GET /orders, POST /orders and a status
    change (PATCH /orders/<id>/status, confirming each order the POSTs placed), per process."""
    if profile_dir is not None:
        py_spy()
    with tempfile.TemporaryDirectory(prefix="orderbus-cpu-") as tmp:
        peer = SystemPeer(Path(tmp), production=production, env=_settings(settings)).start()
        try:
            for kind in measure(peer, count, profile_dir):
                p50 = kind["response_p50_ms"] or 0.0
                click.echo(f"{kind['request']}: response p50 {p50:.2f} ms, {kind['errors']} errors")
                for name, ms in kind["cpu_ms"].items():
                    if ms >= 0.005:
                        click.echo(f"  {name:18s} {ms:6.2f} ms CPU per request")
                click.echo(f"  {'total':18s} {kind['total_cpu_ms']:6.2f} ms CPU per request")
            if profile_dir is not None:
                for method in WRITES:
                    for raw in sorted((profile_dir / method.lower()).glob("*.txt")):
                        click.echo(f"py-spy, {method}, {raw.stem}:")
                        click.echo("\n".join(summary(raw)))
        finally:
            peer.stop()


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("ORDERBUS_"):
            raise click.BadParameter(f"{pair!r}: expected ORDERBUS_NAME=VALUE", param_hint="--set")
        env[name] = value
    return env


if __name__ == "__main__":
    main()
