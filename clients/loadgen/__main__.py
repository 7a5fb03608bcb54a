"""python -m clients.loadgen: run the benchmark suite and write its report (`make bench`).

    python -m clients.loadgen --profile full --out docs/benchmarks
    python -m clients.loadgen --profile quick --out var/benchmarks --soak-seconds 30

Writes results.json (every repetition), summary.json (medians, targets, machine),
README.md and PNG plots into --out.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from . import report
from .suite import LOAD_CPUS, PROFILES, SERVER_CPUS, Bench

METHOD = [
    "- Peers run one after another in the same run, each as its own process on free ports on 127.0.0.1. "
    "The server under test is pinned to one core (`sched_setaffinity`, inherited by its children) and the "
    "load generator to the other.",
    "- The load generator is one Node.js process (`clients/loadgen/node/swarm.js`, mqtt.js and "
    "socket.io-client), the same for every peer. Sends follow an open-loop schedule and latency is measured "
    "from each message's scheduled send time (so a late sender counts as latency); `c=1` means one order at "
    "a time, each waiting for its own receipt (in the full profile 1,000 orders a repetition, so that its "
    "p99 is the 10th slowest of them rather than the 2nd of 200).",
    "- Each measurement is preceded by a warm-up and repeated; tables show the median over repetitions of "
    "each repetition's p50, p99 and max.",
    "- Our broker is `python -m broker` (hardened amqtt) and Mosquitto runs from the repository's "
    "mosquitto.conf (persistence on, as shipped); both read the same password file and ACL and every client "
    "logs in. The Socket.IO peer (`node/server.js`) has no login and speaks WebSocket only.",
    "- *Embedded defaults*: broker, relay and API (granian, 2 workers × 8 threads) on SQLite (WAL, "
    "synchronous=FULL), pinned to one core; *embedded-all-cores* is the same system left on both cores "
    "(which it then shares with the load generator). B4's rehydration, B5 and B6 run on a fresh embedded "
    "system holding exactly the profile's number of active orders. "
    "*Production*: the same on PostgreSQL with Mosquitto. *seed-node*: Express + "
    "socket.io in the seed's style, persisting each order with sql.js (SQLite compiled to WebAssembly; "
    "better-sqlite3 needs a native build or a binary downloaded from outside the npm registry) plus an "
    "fsync'ed journal line, then emitting to the `admin` room.",
    "- CPU runs `clients.loadgen.cpu` (one request at a time on a kept-alive connection, each process's "
    "CPU time from `/proc` before and after) on our embedded system, on both cores as the tool runs it, and "
    "on the seed-style Node server (its `POST /api/orders`). `POST /api/v1/orders` is the bench's order (an "
    "admin's, custom line; the Targets table's CPU figure); `as a customer` is the shop's order of a catalog "
    "item, which also writes the customer's feed, here of a customer with a full feed (20 orders).",
    "- The Targets table compares each figure with its first bar and aim (an aim named after a peer is that "
    "peer's figure in the same run) and with seed-node's figure where seed-node has one (for fan-out, the "
    "same Node server's Socket.IO emit in B2). A request that failed (an error status or no answer) or an "
    "order lost in the runs behind a figure makes its target a miss.",
    "- B2 publishes a 600-byte payload at the rate shown (QoS 1, not retained) to N subscribers, and gives "
    "the CPU time per copy delivered of the server's processes (from `/proc`) and of the load generator "
    "(every subscriber's reading and answering is in that one process): at 1,000 subscribers the later "
    "copies wait for whichever side is slower, so the two say which one a p99 measures. "
    "B4 publishes the retained state first (not timed), then the clients connect at once. B5 assigns K "
    "orders to an agent whose persistent session is offline (stopping when the service refuses a worklist "
    "larger than a message may be), then times its reconnect until it holds a worklist with every order "
    "assigned. B6 samples RSS while the clients stay connected and orders trickle in.",
]


@click.command()
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="full", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/benchmarks"), show_default=True)
@click.option("--soak-seconds", type=float, help="B6's soak duration (default: the profile's)")
@click.option("--only", help="comma-separated subset, e.g. B0,B2")
@click.option(
    "--brokers",
    help="B2 and B4's brokers (nats-cluster: B3 too), a comma-separated subset of"
    " embedded,mosquitto,socketio,nats-cluster (default: all)",
)
@click.option("--no-plots", is_flag=True, help="skip the PNG plots (matplotlib not installed)")
@click.option(
    "--report-only",
    is_flag=True,
    help="rewrite the report from --out's results.json (after editing findings.md)",
)
def main(
    profile: str,
    out: Path,
    soak_seconds: float | None,
    only: str | None,
    brokers: str | None,
    no_plots: bool,
    report_only: bool,
) -> None:
    """Run the benchmarks B0-B6 and write JSON, plots and a markdown report."""
    if report_only:
        write(json.loads((out / "results.json").read_text()), out, no_plots)
        return
    chosen = PROFILES[profile]
    if soak_seconds is not None:
        chosen = dataclasses.replace(chosen, soak_seconds=soak_seconds)
    if only:
        chosen = dataclasses.replace(chosen, only=tuple(x.strip().upper() for x in only.split(",")))
    if brokers:
        names = tuple(x.strip().lower() for x in brokers.split(",") if x.strip())
        unknown = sorted(set(names) - {"embedded", "mosquitto", "socketio", "nats-cluster"})
        if unknown:
            raise click.BadParameter(f"unknown broker {unknown[0]!r}", param_hint="--brokers")
        chosen = dataclasses.replace(chosen, brokers=names)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = lambda line: click.echo(f"[{time.monotonic() - started:6.0f} s] {line}", err=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="orderbus-bench-") as tmp:
        partial = out / "results.partial.json"
        results = Bench(chosen, Path(tmp), log, lambda r: partial.write_text(json.dumps(r, indent=1))).run()
        partial.unlink(missing_ok=True)
    settings = {
        **dataclasses.asdict(chosen),
        "server_cpus": sorted(SERVER_CPUS),
        "load_cpus": sorted(LOAD_CPUS),
        "method": METHOD,
    }
    settings["fanout_rates"] = {str(k): v for k, v in chosen.fanout_rates.items()}
    doc = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.monotonic() - started),
        "settings": settings,
        "machine": report.machine(),
        "results": results,
    }
    write(doc, out, no_plots)


def write(doc: dict, out: Path, no_plots: bool) -> None:
    """results.json, summary.json, the plots and README.md; findings.md (hand-written) is included."""
    results = doc["results"]
    doc["targets"] = report.targets(results)
    notes = out / "findings.md"
    doc["notes"] = notes.read_text().splitlines() if notes.exists() else []
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = {
        **doc,
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "raw"} for k, v in results.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    images = [] if no_plots else report.plots(results, out)
    (out / "README.md").write_text(report.markdown(doc, images))
    for t in doc["targets"]:
        click.echo(f"{t['verdict']:>15}: {t['target']}: {t['measured']} {t['unit']}")
    click.echo(f"report: {out / 'README.md'}", err=True)


if __name__ == "__main__":
    sys.exit(main())
