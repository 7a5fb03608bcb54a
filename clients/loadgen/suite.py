"""The benchmarks B0-B6: each starts its peers one after another, drives them with the Node
swarm (node/swarm.js) and returns raw per-repetition results plus their medians.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import contract
from clients.rest import ApiError

from .peers import (
    NODE_DIR,
    PUBLISHER,
    SUBSCRIBERS,
    EmbeddedBrokerPeer,
    MosquittoPeer,
    NatsClusterPeer,
    NodePeer,
    Peer,
    SystemPeer,
    cores,
    node,
    pinned,
    processes,
    rss_mb,
)

ORDER = {
    "customer": {"name": "Bench Customer", "phone": "+1 555 0142", "address": "42 Bench Street"},
    "items": [{"name": "Margherita", "quantity": 1, "unit_price_cents": 1299}],
}


@dataclass(frozen=True)
class Profile:
    name: str
    reps: int
    b0_count: int
    b1_rates: tuple[int, ...]
    rate_seconds: float
    c1_count: int
    b3_rates: tuple[int, ...]
    fanout_levels: tuple[int, ...]
    fanout_rates: dict[int, int]
    fanout_seconds: float
    warmup_seconds: float
    storm_orders: tuple[int, ...]
    storm_dashboards: tuple[int, ...]
    storm_agents: int
    backlog: tuple[int, ...]
    soak_clients: int
    soak_orders: int
    soak_seconds: float
    timeout_seconds: float
    cpu_count: int = 1000  # CPU: requests per kind (clients.loadgen.cpu)
    only: tuple[str, ...] = ("B0", "CPU", "B1", "B2", "B3", "B4", "B5", "B6")
    brokers: tuple[str, ...] = ("embedded", "mosquitto", "socketio", "nats-cluster")
    transports: tuple[str, ...] = ("tcp", "ws", "socketio")
    storms: bool = True  # B4's storms on the bare brokers (its rehydration runs on the system)


FANOUT_RATES = {1: 100, 2: 100, 10: 100, 100: 50, 1000: 10}
PROFILES = {
    "full": Profile(
        "full",
        reps=3,
        b0_count=2000,
        b1_rates=(250, 500, 750, 1000, 1500),
        rate_seconds=3,
        c1_count=1000,  # a p99 of 1,000 is the 10th slowest (of 200 it was the 2nd)
        b3_rates=(250, 500, 750, 1000, 1500),
        fanout_levels=(1, 10, 100, 1000),
        fanout_rates=FANOUT_RATES,
        fanout_seconds=3,
        warmup_seconds=1,
        storm_orders=(1000, 10_000),
        storm_dashboards=(20, 100),
        storm_agents=1000,
        backlog=(10, 1000, 5000),
        soak_clients=1000,
        soak_orders=10_000,
        soak_seconds=600,
        timeout_seconds=15,
    ),
    "quick": Profile(
        "quick",
        reps=3,
        b0_count=300,
        b1_rates=(250, 1000),
        rate_seconds=1,
        c1_count=40,
        b3_rates=(250,),
        fanout_levels=(1, 10, 100),
        fanout_rates=FANOUT_RATES,
        fanout_seconds=1,
        warmup_seconds=0.3,
        storm_orders=(1000,),
        storm_dashboards=(20,),
        storm_agents=200,
        backlog=(10,),
        soak_clients=200,
        soak_orders=1000,
        soak_seconds=10,
        timeout_seconds=8,
        cpu_count=300,
    ),
    # For the test suite: the machinery end to end, at the smallest size.
    "smoke": Profile(
        "smoke",
        reps=1,
        b0_count=50,
        b1_rates=(),
        rate_seconds=0.5,
        c1_count=5,
        b3_rates=(50,),
        fanout_levels=(1, 2),
        fanout_rates=FANOUT_RATES,
        fanout_seconds=0.3,
        warmup_seconds=0.1,
        storm_orders=(20,),
        storm_dashboards=(2,),
        storm_agents=5,
        backlog=(3,),  # with --only B5
        soak_clients=0,
        soak_orders=20,
        soak_seconds=0,
        timeout_seconds=10,
        only=("B0", "B2", "B3", "B4"),
        brokers=("embedded",),
    ),
}

SERVER_CPUS, LOAD_CPUS = cores()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def swarm(config: dict, timeout: float = 900) -> list[dict]:
    """Run node/swarm.js on the load generator's core; its per-repetition results."""
    with pinned(LOAD_CPUS):
        done = subprocess.run(
            [node(), "swarm.js"],
            input=json.dumps(config),  # on stdin: a thousand logins exceed an argument's limit
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if done.returncode != 0:
        raise RuntimeError(f"swarm {config['mode']} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout)["results"]


@contextmanager
def running(peer: Peer) -> Iterator[Peer]:
    with pinned(SERVER_CPUS | LOAD_CPUS if peer.all_cores else SERVER_CPUS):
        peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def medians(rows: list[dict], key: str) -> dict:
    """Median over repetitions of each of p50, p99 and max of ``rows[*][key]``."""
    out = {}
    for stat in ("p50", "p99", "max"):
        values = [r[key][stat] for r in rows if r.get(key) and r[key].get(stat) is not None]
        out[stat] = round(statistics.median(values), 3) if values else None
    return out


def median_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


class Bench:
    """One run of the suite; ``results[name]`` holds each benchmark's raw rows and summary."""

    def __init__(
        self,
        profile: Profile,
        workdir: Path,
        log: Callable[[str], None] = print,
        save: Callable[[dict], None] | None = None,
    ) -> None:
        self.profile, self.workdir, self.log = profile, workdir, log
        self.save = save  # called with the results so far after each benchmark
        self.results: dict[str, dict] = {}

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self) -> dict:
        steps = {
            "B0": self.b0,
            "CPU": self.cpu,
            "B2": self.b2,
            "B4": self.b4 if self.profile.storms else None,
        }
        for name, step in steps.items():
            if step is not None and name in self.profile.only:
                self._timed(name, step)
        if {"B1", "B3", "B5", "B6", "B4"} & set(self.profile.only):
            self.systems()
        return self.results

    def _timed(self, name: str, step: Callable[[], dict]) -> None:
        self.log(f"{name} ...")
        start, t0 = load_average(), time.monotonic()
        try:
            body = step()
        except Exception as exc:  # one benchmark's failure is reported; the others still run
            self.log(f"{name} failed: {exc!r}")
            body = {"errors": [*self.results.get(name, {}).get("errors", []), repr(exc)[:2000]]}
        self.results.setdefault(name, {}).update(body)
        self.results[name].setdefault("load_average", []).append(
            {"start": start, "end": load_average(), "seconds": round(time.monotonic() - t0, 1)}
        )
        if self.save is not None:
            self.save(self.results)

    @contextmanager
    def _peer_part(self, bench: str, what: str, errors: list[str]) -> Iterator[None]:
        """One peer's part of a benchmark: its failure is logged and kept in ``errors``, and
        the other peers' parts still run and keep their rows."""
        try:
            yield
        except Exception as exc:
            self.log(f"  {bench} {what} failed: {exc!r:.500}")
            errors.append(f"{what}: {exc!r}"[:2000])

    # -- B0 floors -------------------------------------------------------------------------
    def b0(self) -> dict:
        n = self.profile.b0_count
        rows = []
        for rep in range(self.profile.reps):
            rows.append({"what": "loopback TCP round trip", "rep": rep, "latency_ms": _loopback(n)})
            for sync in ("NORMAL", "FULL"):
                path = self._dir("b0") / f"floor-{sync}-{rep}.db"
                rows.append(
                    {"what": f"SQLite commit WAL+{sync}", "rep": rep, "latency_ms": _sqlite(path, sync, n)}
                )
        summary = {
            what: medians([r for r in rows if r["what"] == what], "latency_ms")
            for what in dict.fromkeys(r["what"] for r in rows)
        }
        return {"raw": rows, "summary": summary, "settings": {"operations": n, "reps": self.profile.reps}}

    # -- CPU per request, per process --------------------------------------------------------
    def cpu(self) -> dict:
        """clients.loadgen.cpu on our system (on both cores, as the tool runs) and on the
        seed-style Node server: CPU milliseconds per request of each process."""
        from .cpu import measure  # (cpu.py takes the order body from this module)

        rows = []
        peers: list[tuple[str, Callable[[], Peer]]] = [
            ("embedded", lambda: SystemPeer(self._dir("cpu-embedded"), all_cores=True)),
            ("seed-node", lambda: NodePeer(self._dir("cpu-seed"))),
        ]
        for name, make in peers:
            with running(make()) as peer:
                self.log(f"  CPU {name}: {self.profile.cpu_count} requests of each kind")
                rows += [{"peer": name, **kind} for kind in measure(peer, self.profile.cpu_count)]
        return {"raw": rows, "summary": rows}

    # -- B2 fan-out ------------------------------------------------------------------------
    def b2(self) -> dict:
        p = self.profile
        rows: list[dict] = []
        errors: list[str] = []
        for peer_type, transports in (
            (EmbeddedBrokerPeer, ("tcp", "ws")),
            (MosquittoPeer, ("tcp", "ws")),
            (NodePeer, ("socketio",)),
            (NatsClusterPeer, ("tcp", "ws")),
        ):
            for transport in [t for t in transports if peer_type.name in p.brokers and t in p.transports]:
                with (
                    self._peer_part("B2", f"{peer_type.name} {transport}", errors),
                    running(peer_type(self._dir(f"b2-{peer_type.name}-{transport}"))) as peer,
                ):
                    self.log(f"  B2 {peer.name} {transport}")
                    config = {
                        "mode": "fanout",
                        "proto": "socketio" if transport == "socketio" else transport,
                        "host": "127.0.0.1",
                        "port": peer.ws_port if transport == "ws" else peer.port,
                        "pub": PUBLISHER,
                        "subs": peer.spread(SUBSCRIBERS[: max(p.fanout_levels)]),
                        "levels": list(p.fanout_levels),
                        "rates": {str(k): v for k, v in p.fanout_rates.items()},
                        "seconds": p.fanout_seconds,
                        "warmup_seconds": p.warmup_seconds,
                        "reps": p.reps,
                        "drain_seconds": p.timeout_seconds,
                        "payload_bytes": 600,
                        # the server's CPU per copy beside the load generator's (see b2_cpu)
                        "server_pids": peer.pids(),
                        "clk_tck": os.sysconf("SC_CLK_TCK"),
                    }
                    for row in swarm(config):
                        rows.append({"peer": peer.name, "transport": transport, **row})
        summary = []
        for key in dict.fromkeys((r["peer"], r["transport"], r["subscribers"]) for r in rows):
            group = [r for r in rows if (r["peer"], r["transport"], r["subscribers"]) == key]
            summary.append(
                {
                    "peer": key[0],
                    "transport": key[1],
                    "subscribers": key[2],
                    "rate": group[0]["rate"],
                    "latency_ms": medians(group, "latency_ms"),
                    "lost": sum(r["expected"] - r["received"] for r in group),
                    "duplicates": sum(r["duplicates"] for r in group),
                    **b2_cpu(group),
                }
            )
        return {"raw": rows, "summary": summary, **({"errors": errors} if errors else {})}

    # -- B4 reconnect storms on the bare brokers ---------------------------------------------
    def b4(self) -> dict:
        p = self.profile
        rows: list[dict] = []
        errors: list[str] = []
        for peer_type in (EmbeddedBrokerPeer, MosquittoPeer, NatsClusterPeer):
            if peer_type.name not in p.brokers:
                continue
            for orders in p.storm_orders:
                with (
                    self._peer_part("B4", f"{peer_type.name} {orders} retained", errors),
                    running(peer_type(self._dir(f"b4-{peer_type.name}-{orders}"))) as peer,
                ):
                    first = True
                    for dashboards in p.storm_dashboards:
                        self.log(f"  B4 {peer.name} {orders} retained x {dashboards} dashboards")
                        config = self._storm(peer, dashboards, contract.order_status("+"), orders)
                        config["retained"] = {"orders": orders, "agents": 0} if first else None
                        first = False
                        for row in swarm(config):
                            rows.append(
                                {
                                    "peer": peer.name,
                                    "case": f"{orders} retained orders x {dashboards} dashboards",
                                    **row,
                                }
                            )
            with (
                self._peer_part("B4", f"{peer_type.name} agents reconnecting", errors),
                running(peer_type(self._dir(f"b4-{peer_type.name}-agents"))) as peer,
            ):
                self.log(f"  B4 {peer.name} {p.storm_agents} agents reconnecting")
                config = self._storm(peer, p.storm_agents, contract.agent_assigned("bench-{i}"), 1)
                config |= {"retained": {"orders": 0, "agents": p.storm_agents}, "clean": False}
                for row in swarm(config):
                    rows.append({"peer": peer.name, "case": f"{p.storm_agents} agents reconnecting", **row})
        return {"raw": rows, "summary": _storm_summary(rows), **({"errors": errors} if errors else {})}

    def _storm(self, peer: Peer, clients: int, filter_: str, expect: int, subs: list | None = None) -> dict:
        """A storm of ``clients`` subscribers, each with its own broker login (``subs``; default
        the bench subscribers): both brokers use a login's username as its client id."""
        return {
            "mode": "storm",
            "proto": "tcp",
            "host": "127.0.0.1",
            "port": peer.port,
            "pub": PUBLISHER,
            "subs": peer.spread(SUBSCRIBERS[:clients]) if subs is None else subs,
            "clients": clients,
            "filter": filter_,
            "expect": expect,
            "reps": self.profile.reps,
            "timeout_seconds": self.profile.timeout_seconds,
            "payload_bytes": 600,
        }

    # -- B1, B3 (and B4 rehydration, B5, B6) on whole systems ---------------------------------
    def systems(self) -> None:
        p = self.profile
        peers: list[tuple[str, Callable[[], Peer], set[str]]] = [
            ("embedded-defaults", lambda: SystemPeer(self._dir("sys-embedded")), {"B1", "B3"}),
            # The same with SQLite's synchronous=NORMAL: how much of B3 is the commit's fsync.
            (
                "embedded-sync-normal",
                lambda: SystemPeer(self._dir("sys-normal"), env={"ORDERBUS_SQLITE_SYNCHRONOUS": "NORMAL"}),
                {"B3"},
            ),
            # The same on both cores (shared with the load generator): the machine the targets name.
            (
                "embedded-all-cores",
                lambda: SystemPeer(self._dir("sys-all-cores"), name="embedded-all-cores", all_cores=True),
                {"B3"},
            ),
            # A fresh system holding exactly the profile's number of active orders (B3 leaves
            # however many its rates placed): rehydration, the soak and the offline backlog.
            ("embedded-defaults", lambda: SystemPeer(self._dir("sys-state")), {"B4", "B5", "B6"}),
            ("production", lambda: SystemPeer(self._dir("sys-production"), production=True), {"B1", "B3"}),
            ("seed-node", lambda: NodePeer(self._dir("sys-seed")), {"B1", "B3"}),
        ]
        if "nats-cluster" in p.brokers:  # the production shape on three NATS nodes, before seed-node
            cluster = lambda: SystemPeer(  # noqa: E731
                self._dir("sys-cluster"), production=True, cluster=True, name="production-cluster"
            )
            peers.insert(-1, ("production-cluster", cluster, {"B3"}))
        if p.name == "smoke":  # one system and the Node peer; B5's own system only when asked for
            peers = [x for x in peers if x is peers[0] or x is peers[-1] or "B5" in x[2] & set(p.only)]
        for name, make, benches in peers:
            wanted = benches & set(p.only)
            if not wanted:
                continue
            with running(make()) as peer:
                if "B1" in wanted and p.b1_rates:
                    self._timed("B1", lambda peer=peer, name=name: self._rest(peer, name))
                if "B3" in wanted:
                    self._timed("B3", lambda peer=peer, name=name: self._e2e(peer, name))
                if "B4" in wanted:
                    self._timed("B4", lambda peer=peer: self._rehydrate(peer))
                if "B6" in wanted and p.soak_clients:
                    self._timed("B6", lambda peer=peer: self._soak(peer))
                if "B5" in wanted and p.backlog:
                    self._timed("B5", lambda peer=peer: self._backlog(peer))

    def _http(self, peer: Peer, name: str) -> dict:
        if name == "seed-node":
            return {"api": f"http://127.0.0.1:{peer.port}/api/orders", "headers": {}}
        return {
            "api": f"{peer.api}/orders",
            "headers": {"Authorization": f"Bearer {peer.login['access_token']}"},
        }

    def _sub(self, peer: Peer, name: str) -> dict:
        if name == "seed-node":
            return {
                "kind": "socketio",
                "host": "127.0.0.1",
                "port": peer.port,
                "event": "order:new",
                "room": "admin",
            }
        login = peer.login["mqtt"]
        return {
            "kind": "mqtt",
            "proto": "tcp",
            "host": "127.0.0.1",
            "port": peer.port,
            "topic": contract.ORDERS_NEW,
            "username": login["username"],
            "password": login["password"],
        }

    def _rest(self, peer: Peer, name: str) -> dict:
        return self._orders("B1", peer, name, self.profile.b1_rates, subscribe=False)

    def _e2e(self, peer: Peer, name: str) -> dict:
        if name != "seed-node":
            time.sleep(0.5)  # Mosquitto re-reads its password file (the admin's new login) on SIGHUP
        return self._orders("B3", peer, name, self.profile.b3_rates, subscribe=True)

    def _orders(self, bench: str, peer: Peer, name: str, rates: tuple[int, ...], subscribe: bool) -> dict:
        """POST /orders at each rate (B3 also one at a time first), with or without a subscriber."""
        p = self.profile
        self.log(f"  {bench} {name}")
        phases = (
            [{"rate": None, "count": p.c1_count, "warmup": max(5, p.c1_count // 10)}] if subscribe else []
        )
        phases += [
            {"rate": r, "count": int(r * p.rate_seconds), "warmup": int(r * p.warmup_seconds)} for r in rates
        ]
        named: dict = dict(processes(peer))  # a name's pid, or its pids (swarm.js takes either)
        if isinstance(peer, SystemPeer) and peer.database:  # its backends, those opened later too
            named = {name: pids for name, pids in named.items() if not name.startswith("pg for")}
            named["postgresql backends"] = {"cmdline": f" {peer.database} "}
        config = {
            "mode": "e2e",
            **self._http(peer, name),
            "order": ORDER,
            "sub": self._sub(peer, name) if subscribe else None,
            "reps": p.reps,
            "drain_seconds": p.timeout_seconds,
            "sockets": 64,
            # each server process's CPU per order under this load (see cpu_per_order)
            "server_pids": named,
            "clk_tck": os.sysconf("SC_CLK_TCK"),
        }
        rows: list[dict] = []
        for phase in phases:
            got = [{"peer": name, **r} for r in swarm({**config, "phases": [phase]})]
            rows += got
            if phase["rate"] and (median_of(got, "achieved_per_second") or 0) < 0.8 * phase["rate"]:
                self.log(f"  {bench} {name} saturated at {phase['rate']}/s: higher rates skipped")
                break
        earlier = self.results.get(bench, {})
        key = "receipt_ms" if subscribe else "response_ms"
        return {
            "raw": earlier.get("raw", []) + rows,
            "summary": earlier.get("summary", []) + _rate_summary(rows, key),
        }

    def _top_up(self, peer: SystemPeer, wanted: int) -> None:
        """Place orders until ``wanted`` are active (B3 has placed some already)."""
        missing = wanted - _active_orders(peer)
        if missing > 0:
            self.log(f"  placing {missing} more orders first")
            config = {"mode": "e2e", **self._http(peer, "embedded-defaults"), "order": ORDER, "sub": None}
            phases = [{"rate": 500, "count": missing}]
            swarm({**config, "phases": phases, "reps": 1, "drain_seconds": 30, "sockets": 32})

    def _rehydrate(self, peer: SystemPeer) -> dict:
        """Restart the embedded broker; time until a dashboard holds every active order again."""
        self._top_up(peer, self.profile.soak_orders)
        active = _active_orders(peer)
        login = peer.login["mqtt"]
        rows = []
        for rep in range(self.profile.reps):
            self.log(f"  B4 rehydration of {active} active orders, rep {rep}")
            peer.system.stop("broker")
            with pinned(SERVER_CPUS):
                restarted = time.monotonic() * 1000
                peer.system.start("broker")
            time.sleep(0.2)
            row = swarm(
                {
                    **self._storm(peer, 1, contract.order_status("+"), active, subs=[login]),
                    "reps": 1,
                }
            )[0]
            converged = row["converged_at_ms"]
            row["converged_seconds"] = None if converged is None else round((converged - restarted) / 1000, 3)
            rows.append(
                {
                    "peer": "embedded-defaults",
                    "case": f"rehydrate {active} active orders after a broker restart",
                    **row,
                    "rep": rep,
                }
            )
        return {
            "raw": self.results.get("B4", {}).get("raw", []) + rows,
            "summary": _storm_summary((self.results.get("B4", {}).get("raw", [])) + rows),
        }

    def _soak(self, peer: SystemPeer) -> dict:
        """B6: RSS of broker, relay and API with many clients connected, while orders flow."""
        p = self.profile
        self._top_up(peer, p.soak_orders)
        self.log(f"  B6 soak: {p.soak_clients} clients for {p.soak_seconds:.0f} s")
        logins = peer.dashboard_logins(p.soak_clients)  # one per dashboard, as pages get them
        config = {
            **self._storm(peer, p.soak_clients, contract.agent_assigned("soak-{i}"), 0, subs=logins),
            "reps": 1,
            "hold_seconds": p.soak_seconds,
            "timeout_seconds": 1,
        }
        samples: list[dict] = []
        with pinned(LOAD_CPUS):
            proc = subprocess.Popen(
                [node(), "swarm.js"],
                cwd=NODE_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(config))  # on stdin: a thousand logins exceed an argument's limit
        proc.stdin.close()
        holding = threading.Event()
        threading.Thread(
            target=lambda: [holding.set() for line in proc.stderr if "holding" in line], daemon=True
        ).start()
        holding.wait(120)
        trickle = threading.Thread(
            target=swarm,
            daemon=True,
            args=(
                {
                    "mode": "e2e",
                    **self._http(peer, "embedded-defaults"),
                    "order": ORDER,
                    "sub": None,
                    "phases": [{"rate": 5, "count": int(5 * p.soak_seconds * 0.95)}],
                    "reps": 1,
                    "drain_seconds": 10,
                    "sockets": 4,
                },
            ),
        )
        trickle.start()
        t0 = time.monotonic()
        interval = max(1.0, p.soak_seconds / 30)
        while proc.poll() is None:
            sample = {"seconds": round(time.monotonic() - t0, 1)}
            for name, proc_ in peer.system.procs.items():
                pids = [proc_.pid] + (list(_children(proc_.pid)) if name == "api" else [])
                sample[name] = round(sum(rss_mb(pid) for pid in pids if Path(f"/proc/{pid}").exists()), 1)
            samples.append(sample)
            time.sleep(interval)
        trickle.join(30)
        growth = {k: round(samples[-1][k] - samples[0][k], 1) for k in samples[0] if k != "seconds"}
        return {
            "raw": samples,
            "summary": {
                "clients": p.soak_clients,
                "active_orders": _active_orders(peer),
                "seconds": p.soak_seconds,
                "start_mb": {k: v for k, v in samples[0].items() if k != "seconds"},
                "end_mb": {k: v for k, v in samples[-1].items() if k != "seconds"},
                "growth_mb": growth,
            },
        }

    def _backlog(self, peer: SystemPeer) -> dict:
        """B5: K assignments while the agent is offline; time until it holds them all after
        reconnecting. The service refuses a worklist larger than a message may be (409
        worklist-full, about 1,600 orders): the assigning stops there, and the agent must hold
        every order it was given."""
        rows: list[dict] = []
        for k in self.profile.backlog:
            agent = peer.system.make_agent()
            login = agent["mqtt"]
            base = {
                **self._storm(peer, 1, contract.agent_assigned(agent["id"]), 1, subs=[login]),
                "reps": 1,
                "clean": False,
                "expect_orders": 0,
            }
            swarm({**base, "timeout_seconds": 5})  # creates its persistent session, then leaves
            self.log(f"  B5 assigning {k} orders to an offline agent")
            t0 = time.monotonic()
            done = _assign_many(peer, agent["id"], k)
            assigned_seconds = time.monotonic() - t0
            row = swarm(
                {
                    **base,
                    "expect_orders": done["assigned"],
                    "resume": True,  # the first reconnect since the agent left: it gets the backlog
                    "timeout_seconds": self.profile.timeout_seconds * 4,
                }
            )[0]
            rows.append(
                {
                    "assignments": k,
                    "assign_seconds": round(assigned_seconds, 1),
                    "assigned": done["assigned"],
                    "refused": done["refused"],
                    "assign_ms": _first_and_last(done["assign_ms"]),
                    **row,
                }
            )
            self.log(
                f"  B5 {k}: {done['assigned']} assigned ({done['refused']} refused: worklist full) "
                f"in {assigned_seconds:.1f} s, converged {row['converged_seconds']}"
            )
        return {
            "raw": rows,
            "summary": [
                {
                    "assignments": r["assignments"],
                    "assigned": r["assigned"],
                    "refused": r["refused"],
                    "complete": r["complete"] == 1,
                    "assign_seconds": r["assign_seconds"],
                    "assign_ms": r["assign_ms"],
                    "skipped": r.get("skipped"),
                    "converged_seconds": r["converged_seconds"],
                    "messages": r["messages"],
                }
                for r in rows
            ],
        }


def _children(pid: int) -> list[int]:
    from .peers import children

    return children(pid)


def _active_orders(peer: SystemPeer) -> int:
    with sqlite3.connect(peer.workdir / "var" / "orderbus.db") as conn:
        return conn.execute(
            "SELECT count(*) FROM orders WHERE status NOT IN ('delivered', 'cancelled', 'rejected')"
        ).fetchone()[0]


def _assign_many(peer: SystemPeer, agent_id: str, count: int) -> dict:
    """Place, confirm and assign ``count`` orders to the agent, 8 at a time; stop at the first
    refusal for a full worklist. The assigned and refused counts, and each assignment's
    response time in milliseconds, in the order they finished."""
    from concurrent.futures import ThreadPoolExecutor

    full = threading.Event()
    lock = threading.Lock()
    took: list[float] = []
    refused = [0]

    def one(_: int) -> None:
        if full.is_set():
            return
        order = peer.system.ready_order("confirmed")
        started = time.perf_counter()
        try:
            peer.system.assign(order["id"], agent_id)
        except ApiError as exc:
            if exc.status != 409 or not str(exc.problem.get("type", "")).endswith("/worklist-full"):
                raise
            full.set()
            with lock:
                refused[0] += 1
            return
        with lock:
            took.append((time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))
    return {"assigned": len(took), "refused": refused[0], "assign_ms": took}


def b2_cpu(rows: list[dict]) -> dict:
    """CPU per copy delivered, µs, over a group's repetitions: the server's and the load generator's.

    At 1,000 subscribers one copy's latency is the later of the broker's and the load
    generator's work for the copies before it (each on its own core), so these say which side
    a p99 measures.
    """
    received = sum(r["received"] for r in rows)
    out: dict = {}
    for side in ("server", "client"):
        spent = [r.get(f"{side}_cpu_ms") for r in rows]
        if received and all(x is not None for x in spent):
            out[f"{side}_cpu_us_per_copy"] = round(sum(spent) * 1000 / received, 1)
    return out


def cpu_per_order(rows: list[dict]) -> dict:
    """CPU time per order answered 2xx, ms, over a group's repetitions: each server process's
    (the API's workers together), their total, and the load generator's own.

    Under load, on the core the server shares among its processes, this is what sets the
    orders a second it can sustain there: about 1,000 / the total.
    """
    orders = sum(r["ok"] for r in rows)
    if not orders or any("server_cpu_ms" not in r for r in rows):
        return {}
    spent: dict[str, float] = {}
    for row in rows:
        for name, ms in row["server_cpu_ms"].items():
            name = "api workers" if name.startswith("api worker") else name
            spent[name] = spent.get(name, 0.0) + ms
    per_order = {name: round(ms / orders, 3) for name, ms in spent.items()}
    out = {"cpu_ms_per_order": {**per_order, "total": round(sum(spent.values()) / orders, 3)}}
    if all("client_cpu_ms" in r for r in rows):
        out["load_generator_cpu_ms_per_order"] = round(sum(r["client_cpu_ms"] for r in rows) / orders, 3)
    return out


def _first_and_last(took: list[float]) -> dict:
    """Median response of the first and of the last tenth of the assignments (at least 5 each):
    flat when an assignment's cost does not grow with the worklist."""
    if not took:
        return {}
    n = max(5, len(took) // 10)
    return {
        "first": round(statistics.median(took[:n]), 2),
        "last": round(statistics.median(took[-n:]), 2),
    }


def _rate_summary(rows: list[dict], key: str) -> list[dict]:
    summary = []
    for peer_name, rate in dict.fromkeys((r["peer"], r["rate"]) for r in rows):
        group = [r for r in rows if (r["peer"], r["rate"]) == (peer_name, rate)]
        entry = {
            "peer": peer_name,
            "rate": rate,
            "count": group[0]["count"],
            key: medians(group, key),
            "achieved_per_second": median_of(group, "achieved_per_second"),
            "errors": sum(r["count"] - r["ok"] for r in group),
            **cpu_per_order(group),
        }
        if "lost" in group[0]:
            entry |= {
                "lost": sum(r["lost"] for r in group),
                "duplicates": sum(r["duplicates"] for r in group),
            }
            entry["response_ms"] = medians(group, "response_ms")
        summary.append(entry)
    return summary


def _storm_summary(rows: list[dict]) -> list[dict]:
    summary = []
    for peer_name, case in dict.fromkeys((r["peer"], r["case"]) for r in rows):
        group = [r for r in rows if (r["peer"], r["case"]) == (peer_name, case)]
        summary.append(
            {
                "peer": peer_name,
                "case": case,
                "converged_seconds": median_of(group, "converged_seconds")
                if all(r["converged_seconds"] is not None for r in group)
                else None,
                "converged_reps": sum(r["converged_seconds"] is not None for r in group),
                "reps": len(group),
                "complete_clients": min(r["complete"] for r in group),
                "clients": group[0]["clients"],
                "duplicates": sum(r["duplicates"] for r in group),
            }
        )
    return summary


def _loopback(count: int) -> dict:
    """Ping-pong of 64 bytes over a loopback TCP connection (an echo thread)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        client.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(client.recv(64 - got))
        samples.append((time.perf_counter() - t) * 1000)
    client.close()
    server.close()
    thread.join(5)
    return _summary(samples)


def _sqlite(path: Path, synchronous: str, count: int) -> dict:
    """One INSERT + COMMIT per operation, WAL mode, as the service's SQLite writes are."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
    body = "x" * 600
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
        samples.append((time.perf_counter() - t) * 1000)
    conn.close()
    return _summary(samples)


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }
