"""CPU time per request, per process of the system: ``python -m clients.loadgen.cpu``.

Starts the embedded system (broker, relay, API under granian) on free ports, sends each
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

from .peers import SystemPeer, children
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


def processes(peer: SystemPeer) -> dict[str, int]:
    found = {name: proc.pid for name, proc in peer.system.procs.items()}
    for n, pid in enumerate(children(found["api"])):
        found[f"api worker {n + 1}"] = pid
    return found


@click.command()
@click.option("-n", "--count", default=1000, show_default=True, help="requests per kind")
def main(count: int) -> None:
    """CPU milliseconds per request of GET /healthz, GET /orders and POST /orders, per process."""
    with tempfile.TemporaryDirectory(prefix="orderbus-cpu-") as tmp:
        peer = SystemPeer(Path(tmp)).start()
        try:
            api = urlsplit(peer.api)
            conn = http.client.HTTPConnection(api.hostname, api.port, timeout=10)
            headers = {
                "Authorization": f"Bearer {peer.login['access_token']}",
                "Content-Type": "application/json",
            }
            body = json.dumps(ORDER)
            kinds = [
                ("GET", "/api/v1/healthz", None),
                ("GET", "/api/v1/orders?limit=1", None),
                ("POST", "/api/v1/orders", body),
            ]
            pids = processes(peer)

            def send(method: str, path: str, data: str | None, n: int) -> list[float]:
                took = []
                for _ in range(n):
                    started = time.perf_counter()
                    conn.request(method, path, data, headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status >= 300:
                        raise click.ClickException(f"{method} {path}: HTTP {response.status}")
                    took.append((time.perf_counter() - started) * 1000)
                return took

            for method, path, data in kinds:
                send(method, path, data, max(20, count // 10))  # warm-up
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                took = send(method, path, data, count)
                time.sleep(0.5)  # the relay and the broker finish the last order
                after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                used = {name: (after[name] - before[name]) * 1000 / count for name in pids}
                click.echo(f"{method} {path}: response p50 {statistics.median(took):.2f} ms")
                for name, ms in used.items():
                    if ms >= 0.005:
                        click.echo(f"  {name:14s} {ms:6.2f} ms CPU per request")
                click.echo(f"  {'total':14s} {sum(used.values()):6.2f} ms CPU per request")
        finally:
            peer.stop()


if __name__ == "__main__":
    main()
