"""Turn a run's results into summary JSON, PNG plots and docs/benchmarks/README.md."""

from __future__ import annotations

import json
import platform
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from .peers import NODE_DIR

# The targets of issue 20 ("the hot path"), then the earlier ones that still stand. An aim
# given as a peer's name is that peer's figure in the same run.
TARGETS = [
    # (key, what, unit, first bar, aim, smaller is better)
    ("cpu", "CPU per order, all processes (`clients.loadgen.cpu`, POST /orders)", "ms", 1.2, 0.8, True),
    ("c1_p50", "POST -> admin receipt p50, c=1, pinned (embedded defaults)", "ms", 1.5, "seed-node", True),
    ("c1_p99", "POST -> admin receipt p99, c=1, pinned (embedded defaults)", "ms", 4, "seed-node", True),
    (
        "sustained",
        "orders/s sustained, zero loss, pinned (embedded defaults)",
        "orders/s",
        800,
        "seed-node",
        False,
    ),
    (
        "sustained_all_cores",
        "orders/s sustained, zero loss, both cores (embedded-all-cores)",
        "orders/s",
        1500,
        2000,
        False,
    ),
    (
        "production_p50",
        "production profile (PostgreSQL + Mosquitto) receipt p50 at 250 orders/s",
        "ms",
        10,
        5,
        True,
    ),
    ("fanout_p99", "fan-out 1 -> 1,000 p99, embedded broker, TCP", "ms", 25, "mosquitto", True),
    ("reconnect", "1,000 agents reconnecting at once: time to converge (embedded broker)", "s", 5, 2, True),
    (
        "rehydrate",
        "rehydration of 10,000+ active orders after a broker restart (embedded defaults)",
        "s",
        5,
        2,
        True,
    ),
]


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = (
        re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        if Path("/proc/meminfo").exists()
        else None
    )
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    pretty = re.search(r'PRETTY_NAME="(.+)"', os_release)
    node_deps = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": len(re.findall(r"^processor", cpuinfo, re.M)),
        "memory_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "os": f"{pretty.group(1) if pretty else platform.system()}, kernel {platform.release()}",
        "versions": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "amqtt": version("amqtt"),
            "paho-mqtt": version("paho-mqtt"),
            "granian": version("granian"),
            "peewee": version("peewee"),
            "mosquitto": _run([mosquitto, "-h"]).replace("mosquitto version ", ""),
            "postgresql": _run(["psql", "--version"]),
            "node": _run(["node", "--version"]),
            **{f"npm {k}": v for k, v in node_deps.items()},
        },
    }


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


@dataclass
class Figure:
    """One peer's figure for a target: its value, and the errors of the runs it stands on
    (HTTP errors: an error status or no answer; for fan-out, messages not received)."""

    value: float | None
    errors: int | None = None
    what_errors: str = "HTTP"


def sustained(b3: list[dict], peer: str) -> Figure:
    """The highest throughput the peer reached at a rate where nothing was lost and no request
    failed; its errors are those of every rate up to that one (a failure at a lower rate means
    that throughput was not sustained with zero errors: the verdict says so)."""
    rows = sorted((r for r in b3 if r["peer"] == peer and r["rate"]), key=lambda r: r["rate"])
    if not rows:
        return Figure(None)
    clean = [r for r in rows if not r["lost"] and not r["errors"]]
    if not clean:
        return Figure(0, rows[0]["errors"] + rows[0]["lost"])
    best = max(clean, key=lambda r: r["achieved_per_second"] or 0)
    errors = sum(r["errors"] + r["lost"] for r in rows if r["rate"] <= best["rate"])
    return Figure(round(best["achieved_per_second"] or 0), errors)


def figures(results: dict) -> dict[str, dict[str, Figure]]:
    """Per target, per peer (``ours`` and any peer it is compared with), the figure of this run."""
    b3 = results.get("B3", {}).get("summary", [])
    b2 = results.get("B2", {}).get("summary", [])
    b4 = results.get("B4", {}).get("summary", [])
    cpu = results.get("CPU", {}).get("summary", [])

    def receipt(peer: str, rate: int | None, stat: str) -> Figure:
        row = _find(b3, peer=peer, rate=rate)
        if row is None:
            return Figure(None)
        return Figure(row["receipt_ms"][stat], row["errors"] + row.get("lost", 0))

    def fanout(peer: str) -> Figure:
        row = _find(b2, peer=peer, transport="socketio" if peer == "socketio" else "tcp", subscribers=1000)
        return Figure(row and row["latency_ms"]["p99"], row and row["lost"], "not received")

    def cpu_per_post(peer: str) -> Figure:
        row = next((r for r in cpu if r["peer"] == peer and r["request"].startswith("POST")), None)
        return Figure(row and row["total_cpu_ms"], row and row["errors"])

    def storm(case: str) -> Figure:
        row = _find(b4, peer="embedded", case=case) if case else None
        return Figure(row and row["converged_seconds"])

    rehydrate = next(
        (r for r in b4 if r["case"].startswith("rehydrate") and int(r["case"].split()[1]) >= 10_000), None
    )
    return {
        "cpu": {"ours": cpu_per_post("embedded"), "seed-node": cpu_per_post("seed-node")},
        "c1_p50": {
            "ours": receipt("embedded-defaults", None, "p50"),
            "seed-node": receipt("seed-node", None, "p50"),
        },
        "c1_p99": {
            "ours": receipt("embedded-defaults", None, "p99"),
            "seed-node": receipt("seed-node", None, "p99"),
        },
        "sustained": {"ours": sustained(b3, "embedded-defaults"), "seed-node": sustained(b3, "seed-node")},
        "sustained_all_cores": {
            "ours": sustained(b3, "embedded-all-cores"),
            "seed-node": sustained(b3, "seed-node"),
        },
        "production_p50": {
            "ours": receipt("production", 250, "p50"),
            "seed-node": receipt("seed-node", 250, "p50"),
        },
        # The seed-style Node server is B2's Socket.IO peer (node/server.js, one room emit).
        "fanout_p99": {
            "ours": fanout("embedded"),
            "mosquitto": fanout("mosquitto"),
            "seed-node": fanout("socketio"),
        },
        "reconnect": {"ours": storm("1000 agents reconnecting")},
        "rehydrate": {"ours": Figure(rehydrate and rehydrate["converged_seconds"])},
    }


def verdict(value: float | None, errors: int | None, bar: float, aim: float | None, smaller: bool) -> str:
    """``aim met``, ``first bar met`` or ``missed``; any error or loss in the runs behind the
    figure is a miss (zero errors is part of every target). The aim is met only with the first
    bar (an aim that is a peer's figure, on a busy day, can be the easier of the two). Without
    the aim's figure (its peer not measured) only the first bar can be met."""
    if value is None:
        return "not measured"
    if errors:
        return "missed (errors)"

    def ok(target: float) -> bool:
        return value <= target if smaller else value >= target

    if aim is not None and ok(aim) and ok(bar):  # a peer's figure as the aim may be below the bar
        return "aim met"
    if ok(bar):
        return "first bar met" if aim is not None else "first bar met (aim not measured)"
    return "missed"


def ratio(ours: float | None, seed: float | None) -> float | None:
    """Ours divided by seed-node's (above 1: more time, or more throughput, than seed-node)."""
    if ours is None or not seed:
        return None
    return round(ours / seed, 2)


def targets(results: dict) -> list[dict]:
    found = figures(results)
    out = []
    for key, what, unit, bar, aim, smaller in TARGETS:
        peers = found[key]
        ours = peers["ours"]
        aim_from = aim if isinstance(aim, str) else None
        aim_value = peers[aim].value if isinstance(aim, str) and aim in peers else aim
        seed = peers.get("seed-node", Figure(None))
        out.append(
            {
                "key": key,
                "target": what,
                "unit": unit,
                "first_bar": bar,
                "aim": aim_value,
                "aim_from": aim_from,
                "measured": ours.value,
                "errors": ours.errors,
                "errors_are": ours.what_errors,
                "verdict": verdict(ours.value, ours.errors, bar, aim_value, smaller),
                "seed_node": seed.value,
                "ratio_to_seed_node": ratio(ours.value, seed.value),
            }
        )
    return out


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _bar_label(row: dict) -> str:
    peer = row["peer"].replace("-", "-\n", 1)  # two lines: the names are long for a bar
    return f"{peer}\n{'c=1' if row['rate'] is None else str(row['rate']) + '/s'}"


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    b2 = results.get("B2", {}).get("summary", [])
    if b2:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for stat, ax in zip(("p50", "p99"), axes, strict=True):
            for series in dict.fromkeys((r["peer"], r["transport"]) for r in b2):
                rows = [
                    r
                    for r in b2
                    if (r["peer"], r["transport"]) == series and r["latency_ms"][stat] is not None
                ]
                ax.plot(
                    [r["subscribers"] for r in rows],
                    [r["latency_ms"][stat] for r in rows],
                    marker="o",
                    label=series[0] if series[1] == "socketio" else " ".join(series),
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("subscribers")
            ax.set_ylabel(f"{stat} latency, ms (log)")
            ax.set_title(f"B2 fan-out, {stat} (median of repetitions)")
            ax.grid(True, which="both", alpha=0.3)
        axes[1].axhline(50, color="red", ls="--", lw=0.8, label="first bar at 1,000 (50 ms)")
        axes[1].legend(fontsize=8)
        made.append(_save(fig, out / "b2-fanout.png"))
    b3 = results.get("B3", {}).get("summary", [])
    if b3:
        fig, ax = plt.subplots(figsize=(11, 4.2))
        labels = [_bar_label(r) for r in b3]
        xs = range(len(b3))
        ax.bar([x - 0.2 for x in xs], [r["receipt_ms"]["p50"] or 0 for r in b3], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [r["receipt_ms"]["p99"] or 0 for r in b3], width=0.4, label="p99")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("POST -> admin receipt, ms (log)")
        ax.set_title("B3 end to end (open loop at a rate; c=1 is one order at a time)")
        ax.legend()
        ax.grid(True, axis="y", which="both", alpha=0.3)
        made.append(_save(fig, out / "b3-end-to-end.png"))
    b1 = results.get("B1", {}).get("summary", [])
    if b1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for peer in dict.fromkeys(r["peer"] for r in b1):
            rows = [r for r in b1 if r["peer"] == peer]
            axes[0].plot(
                [r["rate"] for r in rows], [r["achieved_per_second"] for r in rows], marker="o", label=peer
            )
            axes[1].plot(
                [r["rate"] for r in rows], [r["response_ms"]["p99"] for r in rows], marker="o", label=peer
            )
        top = max(r["rate"] for r in b1)
        axes[0].plot([0, top], [0, top], color="grey", ls=":", lw=0.8, label="offered")
        axes[0].set_xlabel("offered orders/s")
        axes[0].set_ylabel("achieved orders/s")
        axes[1].set_xlabel("offered orders/s")
        axes[1].set_ylabel("POST response p99, ms (log)")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("B1 REST only: POST /orders")
        made.append(_save(fig, out / "b1-rest.png"))
    b6 = results.get("B6", {}).get("raw", [])
    if b6:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name in (k for k in b6[0] if k != "seconds"):
            ax.plot([s["seconds"] for s in b6], [s[name] for s in b6], label=name)
        ax.set_xlabel("seconds into the soak")
        ax.set_ylabel("RSS, MB")
        ax.set_title("B6 memory during the soak")
        ax.grid(True, alpha=0.3)
        ax.legend()
        made.append(_save(fig, out / "b6-memory.png"))
    return made


def _ms(stats: dict | None) -> str:
    if not stats:
        return "–"
    return " / ".join("–" if stats.get(k) is None else f"{stats[k]:.2f}" for k in ("p50", "p99", "max"))


CPU_HEADER = "CPU per order, ms: server (by process) / load generator"


def _cpu_per_order(row: dict) -> str:
    """'1.36 (api workers 0.97, relay 0.19, broker 0.20) / 0.12', or a dash without the figures."""
    cpu = row.get("cpu_ms_per_order")
    if not cpu:
        return "–"
    parts = [
        f"{name} {ms:.2f}"
        for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1])
        if name != "total" and ms >= 0.005  # granian's main process, PostgreSQL's idle background
    ]
    by_process = f" ({', '.join(parts)})" if len(parts) > 1 else ""
    return f"{cpu['total']:.2f}{by_process} / {_value(row.get('load_generator_cpu_ms_per_order'))}"


def _value(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(doc: dict, images: list[str]) -> str:
    r, m, s = doc["results"], doc["machine"], doc["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"Latest run: **{doc['finished_at']}**, profile `{s['name']}` ({doc['seconds'] / 60:.1f} minutes). "
        "Raw numbers: [results.json](results.json); medians only: [summary.json](summary.json).",
        "",
        "**How busy the machine was** shows in the load average at the start and end of each benchmark, "
        "in the tables below and in the JSON; on 2 cores, figures taken above a load of about 2 are "
        "noisy (see Findings).",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                        # the full suite (about 30 minutes), rewrites this page",
        "make bench BENCH_PROFILE=quick    # a smaller run (a few minutes), written to var/benchmarks/",
        "make bench BENCH_SOAK_SECONDS=120 # a shorter B6 soak",
        "# B2/B4 on some brokers only: embedded, mosquitto, socketio, nats-cluster (three nodes; B3 too)",
        ".venv/bin/python -m clients.loadgen --profile quick --only B2,B4 --brokers embedded \\",
        "  --out var/benchmarks",
        ".venv/bin/python -m clients.loadgen.cpu -n 1000  # CPU per request, per process (see Findings)",
        ".venv/bin/python -m clients.loadgen.cpu -n 1000 --profile var/profile  # and py-spy's top frames",
        "# a setting of the system under test, e.g. Flask for every request:",
        ".venv/bin/python -m clients.loadgen.cpu -n 1000 --set ORDERBUS_API_FAST_PATH=false",
        "# the production peer (PostgreSQL, Mosquitto), their CPU included, by the process served:",
        ".venv/bin/python -m clients.loadgen.cpu -n 1000 --production",
        "```",
        "",
        "It needs Node.js and npm (the load generator and the Node peer), Mosquitto and, for the production "
        "profile, PostgreSQL on 127.0.0.1:5432 (it creates and drops its own database). Everything else is "
        "started by the suite on free ports.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gb']} GB; {m['os']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "## Targets",
        "",
        "| target | first bar | aim | measured | errors | verdict | seed-node | ours ÷ seed-node |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_target_row(t) for t in doc["targets"]]
    lines += ["", "## How it is measured", "", *s["method"], ""]
    lines += _sections(r)
    lines += ["## Plots", ""] + [f"![{i}]({i})" for i in images] + [""]
    if doc.get("notes"):
        lines += ["## Findings", "", *doc["notes"], ""]
    return "\n".join(lines) + "\n"


def _target_row(t: dict) -> str:
    unit = t["unit"]
    if t.get("aim_from"):
        sign = "≥" if unit == "orders/s" else "≤"
        aim = (
            f"{sign} {t['aim_from']}'s ({_value(t['aim'])} {unit})"
            if t["aim"] is not None
            else f"{sign} {t['aim_from']}'s (not measured)"
        )
    else:
        aim = f"{_value(t['aim'])} {unit}"
    errors = "–" if t.get("errors") is None else f"{t['errors']} {t.get('errors_are', 'HTTP')}"
    seed = "–" if t.get("seed_node") is None else f"{_value(t['seed_node'])} {unit}"
    ratio = "–" if t.get("ratio_to_seed_node") is None else f"{t['ratio_to_seed_node']:.2f}"
    measured = "–" if t["measured"] is None else f"{_value(t['measured'])} {unit}"
    cells = [
        t["target"],
        f"{_value(t['first_bar'])} {unit}",
        aim,
        measured,
        errors,
        t["verdict"],
        seed,
        ratio,
    ]
    return "| " + " | ".join(cells) + " |"


def _load(block: dict) -> str:
    spans = block.get("load_average", [])
    return "; ".join(f"{a['start'][0]} → {a['end'][0]} over {a['seconds']} s" for a in spans) or "–"


def _table(
    title: str, block: dict, header: list[str], rows: list[list[object]], intro: str = ""
) -> list[str]:
    lines = [f"## {title}", "", f"Load average (1 min) at start → end: {_load(block)}.", ""]
    if intro:
        lines += [intro, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _backlog_state(x: dict) -> str:
    if x.get("skipped"):
        return f"skipped: {x['skipped']}"
    return "yes" if x["complete"] else "no"


def _assigned(x: dict) -> str:
    """How many the agent got; "1,640 (then worklist full)" when the service refused more."""
    if "assigned" not in x:  # a run from before the count was kept
        return "–" if x.get("skipped") else _value(x["assignments"])
    return f"{x['assigned']:,}" + (" (then worklist full)" if x.get("refused") else "")


def _first_last(ms: dict | None) -> str:
    if not ms:
        return "–"
    return f"{ms['first']:.1f} / {ms['last']:.1f}"


def _sections(results: dict) -> list[str]:
    out: list[str] = []
    r = {name: block for name, block in results.items() if "summary" in block}
    for name, block in results.items():
        for error in block.get("errors", []):
            out += [f"**{name} failed** (its other figures, if any, are below): `{error[:300]}`", ""]
    if "B0" in r:
        rows = [[k, _ms(v)] for k, v in r["B0"]["summary"].items()]
        out += _table("B0 floors", r["B0"], ["what", "p50 / p99 / max, ms"], rows)
    if "CPU" in r:
        header = [
            "peer",
            "request",
            "response p50, ms",
            "errors",
            "CPU per request by process, ms",
            "total, ms",
        ]
        rows = [
            [
                x["peer"],
                f"`{x['request']}`",
                _value(x["response_p50_ms"]),
                x["errors"],
                ", ".join(f"{name} {ms:.2f}" for name, ms in x["cpu_ms"].items() if ms >= 0.005),
                f"{x['total_cpu_ms']:.2f}",
            ]
            for x in r["CPU"]["summary"]
        ]
        intro = (
            "`python -m clients.loadgen.cpu`: one request at a time on a kept-alive connection, each "
            "process's CPU time read from `/proc` before and after; our system on both cores."
        )
        out += _table("CPU per request", r["CPU"], header, rows, intro)
    if "B1" in r:
        header = ["peer", "offered/s", "achieved/s", "response p50 / p99 / max, ms", "errors", CPU_HEADER]
        rows = [
            [
                x["peer"],
                x["rate"],
                _value(x["achieved_per_second"]),
                _ms(x["response_ms"]),
                x["errors"],
                _cpu_per_order(x),
            ]
            for x in r["B1"]["summary"]
        ]
        out += _table("B1 REST only: POST /orders", r["B1"], header, rows)
    if "B2" in r:
        header = [
            "peer",
            "transport",
            "subscribers",
            "publishes/s",
            "latency p50 / p99 / max, ms",
            "not received in time",
            "dup",
            "CPU per copy, µs: server / load generator",
        ]
        rows = [
            [
                x["peer"],
                x["transport"],
                x["subscribers"],
                x["rate"],
                _ms(x["latency_ms"]),
                x["lost"],
                x["duplicates"],
                f"{_value(x.get('server_cpu_us_per_copy'))} / {_value(x.get('client_cpu_us_per_copy'))}",
            ]
            for x in r["B2"]["summary"]
        ]
        out += _table("B2 fan-out 1 → N, QoS 1", r["B2"], header, rows)
    if "B3" in r:
        header = [
            "peer",
            "offered/s",
            "achieved/s",
            "receipt p50 / p99 / max, ms",
            "POST response, ms",
            "lost",
            "dup",
            CPU_HEADER,
        ]
        rows = [
            [
                x["peer"],
                x["rate"] or "c=1",
                _value(x["achieved_per_second"]),
                _ms(x["receipt_ms"]),
                _ms(x.get("response_ms")),
                x["lost"],
                x["duplicates"],
                _cpu_per_order(x),
            ]
            for x in r["B3"]["summary"]
        ]
        out += _table("B3 end to end: POST → admin receipt", r["B3"], header, rows)
    if "B4" in r:
        header = [
            "peer",
            "case",
            "converged in, s (median)",
            "reps converged",
            "clients complete (worst)",
            "dup",
        ]
        rows = [
            [
                x["peer"],
                x["case"],
                _value(x["converged_seconds"]),
                f"{x['converged_reps']}/{x['reps']}",
                f"{x['complete_clients']}/{x['clients']}",
                x["duplicates"],
            ]
            for x in r["B4"]["summary"]
        ]
        out += _table("B4 reconnect storms and rehydration", r["B4"], header, rows)
    if "B5" in r:
        header = [
            "assignments asked",
            "assigned",
            "time to assign, s",
            "assignment response, first / last tenth, ms",
            "agent holds all assigned",
            "after reconnect, s",
            "messages",
        ]
        rows = [
            [
                x["assignments"],
                _assigned(x),
                _value(x["assign_seconds"]),
                _first_last(x.get("assign_ms")),
                _backlog_state(x),
                _value(x["converged_seconds"]),
                x["messages"],
            ]
            for x in r["B5"]["summary"]
        ]
        out += _table("B5 offline agent backlog (embedded defaults)", r["B5"], header, rows)
    if "B6" in r:
        b6 = r["B6"]["summary"]
        intro = (
            f"{b6['clients']} connected MQTT clients, {b6['active_orders']} active orders, "
            f"{b6['seconds']:.0f} s soak with 5 new orders/s."
        )
        rows = [[k, b6["start_mb"][k], b6["end_mb"][k], b6["growth_mb"][k]] for k in b6["start_mb"]]
        out += _table(
            "B6 memory (embedded defaults)",
            r["B6"],
            ["process", "RSS at start, MB", "at end, MB", "growth, MB"],
            rows,
            intro,
        )
    return out
