"""CPU time per request, per process of the system: ``python -m clients.loadgen.cpu``.

Starts the embedded system (broker, relay, API under gunicorn) on free ports, sends each
request one at a time over one keep-alive connection, and reads every process's CPU time
(user + system, from /proc/<pid>/stat) before and after. It shows where the time of one
order goes (docs/benchmarks/README.md, "Where the time of one order goes").

    python -m clients.loadgen.cpu -n 1000
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from .peers import Peer, SystemPeer, children
from .suite import ORDER

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of the process's live threads, to the nanosecond (``schedstat``; ``stat``'s
    utime + stime count whole clock ticks of 10 ms, too coarse for a short run)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError, IndexError):  # no schedstat in this kernel
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def processes(peer: Peer) -> dict[str, int]:
    """The peer's processes by name: broker, relay, api (gunicorn's master) and each api
    worker; for the Node peer its one process."""
    if not isinstance(peer, SystemPeer):
        return {"node": peer.pids()[0]}
    found = {name: proc.pid for name, proc in peer.system.procs.items()}
    for n, pid in enumerate(children(found["api"])):
        found[f"api worker {n + 1}"] = pid
    return found


def requests_of(peer: Peer) -> tuple[str, int, dict[str, str], list[tuple[str, str, str | None]]]:
    """Host, port, headers and the requests measured: for our system GET /healthz, GET /orders
    and POST /orders; for the seed-style Node server its POST /api/orders."""
    headers = {"Content-Type": "application/json"}
    body = json.dumps(ORDER)
    if not isinstance(peer, SystemPeer):
        return "127.0.0.1", peer.port, headers, [("POST", "/api/orders", body)]
    api = urlsplit(peer.api)
    headers["Authorization"] = f"Bearer {peer.login['access_token']}"
    kinds = [
        ("GET", "/api/v1/healthz", None),
        ("GET", "/api/v1/orders?limit=1", None),
        ("POST", "/api/v1/orders", body),
    ]
    return str(api.hostname), int(api.port or 80), headers, kinds


def measure(peer: Peer, count: int) -> list[dict]:
    """Per request kind: the response p50, the HTTP errors (an error status or no answer) and
    each process's CPU milliseconds per request, over ``count`` requests one at a time on a
    kept-alive connection after a warm-up of a tenth as many."""
    host, port, headers, kinds = requests_of(peer)
    pids = processes(peer)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    errors = 0

    def send(method: str, path: str, data: str | None, n: int) -> list[float]:
        nonlocal conn, errors
        took = []
        for _ in range(n):
            started = time.perf_counter()
            try:
                conn.request(method, path, data, headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):  # no answer (status 0): a new connection
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            if response.status >= 300:
                errors += 1
            took.append((time.perf_counter() - started) * 1000)
        return took

    results = []
    for method, path, data in kinds:
        send(method, path, data, max(20, count // 10))  # warm-up
        errors = 0
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        took = send(method, path, data, count)
        time.sleep(0.5)  # the relay and the broker finish the last order
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        used = {name: round((after[name] - before[name]) * 1000 / count, 3) for name in pids}
        results.append(
            {
                "request": f"{method} {path}",
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
def main(count: int) -> None:
    """CPU milliseconds per request of GET /healthz, GET /orders and POST /orders, per process."""
    with tempfile.TemporaryDirectory(prefix="orderbus-cpu-") as tmp:
        peer = SystemPeer(Path(tmp)).start()
        try:
            for kind in measure(peer, count):
                p50 = kind["response_p50_ms"] or 0.0
                click.echo(f"{kind['request']}: response p50 {p50:.2f} ms, {kind['errors']} errors")
                for name, ms in kind["cpu_ms"].items():
                    if ms >= 0.005:
                        click.echo(f"  {name:14s} {ms:6.2f} ms CPU per request")
                click.echo(f"  {'total':14s} {kind['total_cpu_ms']:6.2f} ms CPU per request")
        finally:
            peer.stop()


if __name__ == "__main__":
    main()
