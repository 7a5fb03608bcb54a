"""A NATS cluster (JetStream, MQTT) of ``make run-cluster``, started on free ports for a test or benchmark.

The nodes run the ``nats-server`` of the ``cluster`` extra (``.venv/bin/nats-server``,
never a system one), from the configurations ``python -m order_service cluster-config``
writes (``order_service/ops/cluster.py``): the same settings move the same ports, here
to blocks of consecutive free ports. Each node is a child in its own process group,
stopped by its pid. A node counts as started when it accepts an MQTT CONNECT; a start
returns once every replicated stream and consumer also has a leader whose replicas are all
current (by the nodes' ``/jsz``), so that a fault that follows cannot take the only current copy.
With the auth callout on (``ORDERBUS_CLUSTER_AUTH_CALLOUT``, the default), each node's callout
(``python -m order_service cluster-callout --node i``) starts with the node and runs until
:meth:`NatsCluster.close`, as under ``make run-cluster``: a node killed and started again
finds its callout reconnecting.

- :func:`cluster_env`: the environment of a system on a cluster (ports, ORDERBUS_CLUSTER_NODES)
- :class:`NatsCluster`: start, stop, kill, pause, resume and reload nodes
- :func:`make_cluster_system`: the whole system (API, relay) on a fresh cluster
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from contract.link import url_host
from harness.processes import BIN, ROOT, ToolMissing, child_env, cli, free_port_blocks, stop_group
from harness.system import System
from order_service.accounts import nats_logins
from order_service.config import Settings
from order_service.ops import cluster

NODES = 3
#: The settings that move the nodes' ports (node i: the value + i - 1).
PORT_BASES = (
    "ORDERBUS_BROKER_PORT",
    "ORDERBUS_BROKER_WS_PORT",
    "ORDERBUS_CLUSTER_CLIENT_PORT",
    "ORDERBUS_CLUSTER_ROUTE_PORT",
    "ORDERBUS_CLUSTER_MONITOR_PORT",
)


class NatsMissing(ToolMissing):
    """The cluster extra is not installed (make install installs it)."""


def nats_binary() -> Path:
    """The nats-server of the ``cluster`` extra, in this virtualenv."""
    path = BIN / "nats-server"
    if not path.exists():
        raise NatsMissing(f"{path} is missing: pip install -e '.[cluster]' (make install does)")
    return path


def cluster_env(data_dir: Path, nodes: int = NODES, **settings: str) -> dict[str, str]:
    """A system's environment (:func:`~harness.processes.child_env`) with a cluster of ``nodes``
    on free ports. ORDERBUS_MQTT_URL is left unset: the service then lists every node, node 1
    first, and the relay and the bridges move to the next when theirs fails."""
    bases = dict(zip(PORT_BASES, map(str, free_port_blocks(len(PORT_BASES), nodes)), strict=True))
    return child_env(data_dir, ORDERBUS_CLUSTER_NODES=str(nodes), **bases, **settings)


def settings_of(env: dict[str, str]) -> Settings:
    """The service's settings in ``env`` (those the nodes' configurations depend on)."""
    names = (
        "DATA_DIR",
        "CLUSTER_NODES",
        "CLUSTER_AUTH_CALLOUT",
        "BROKER_HOST",
        *(v.removeprefix("ORDERBUS_") for v in PORT_BASES),
    )
    values = {name.lower(): env[f"ORDERBUS_{name}"] for name in names if f"ORDERBUS_{name}" in env}
    return Settings(**values)  # type: ignore[arg-type]


class NatsCluster:
    """The nodes of the configurations in ``env``'s data directory."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.settings = settings_of(env)
        self.nodes = cluster.nodes(self.settings)
        self.procs: dict[int, subprocess.Popen] = {}
        self.callouts: dict[int, subprocess.Popen] = {}
        self.probe: tuple[str, str] | None = None

    def write_configs(self) -> None:
        """``python -m order_service cluster-config`` (after ``migrate``: it reads the logins)."""
        result = cli(self.env, "cluster-config")
        if result.returncode != 0:
            raise RuntimeError(f"order_service cluster-config failed:\n{result.stderr}")
        self.probe = cluster.ensure_probe(self.settings)

    def node(self, index: int) -> cluster.Node:
        return self.nodes[index - 1]

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.mqtt_url for n in self.nodes]

    @property
    def ws_urls(self) -> list[str]:
        return [n.ws_url for n in self.nodes]

    def start(self, *indexes: int, timeout: float = 60.0) -> float:
        """Start the nodes (all by default), wait until each accepts an MQTT CONNECT; the seconds it took."""
        began = time.monotonic()
        chosen = indexes or tuple(n.index for n in self.nodes)
        for index in chosen:
            node = self.node(index)
            log = open(node.log, "ab")  # noqa: SIM115 - the child holds it
            self.procs[index] = subprocess.Popen(
                [str(nats_binary()), "-c", str(node.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
            log.close()
            if self.settings.cluster_auth_callout:
                self.start_callout(index)
        for index in chosen:
            self.wait_ready(index, timeout - (time.monotonic() - began))
        ready = time.monotonic() - began
        self.wait_settled(timeout - ready)
        return ready

    def unsettled(self) -> list[str]:
        """The replicated streams and consumers (the MQTT sessions' JetStream state) that lack a
        leader or whose leader sees a replica that is not current, by each running node's
        ``/jsz``; an unreachable node's monitoring endpoint counts too."""
        led: dict[str, list[str]] = {}  # raft group -> the leader's replicas not current
        groups: dict[str, str] = {}  # raft group -> stream or consumer name
        for index, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            node = self.node(index)
            url = (
                f"http://{url_host(node.host)}:{node.monitor_port}/jsz?streams=true&consumers=true&raft=true"
            )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    report = json.load(answer)
            except (OSError, ValueError, urllib.error.URLError) as error:
                return [f"node {index}: {error}"]
            for account in report.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    for item in [stream, *(stream.get("consumer_detail") or [])]:
                        info = item.get("cluster") or {}
                        if "raft_group" not in info:
                            continue  # not replicated (R1): nothing to wait for
                        groups[info["raft_group"]] = item["name"]
                        if info.get("leader") == node.name:
                            stale = [r["name"] for r in info.get("replicas") or [] if not r.get("current")]
                            led[info["raft_group"]] = stale
        return [
            f"{name}: " + (f"replicas {led[group]} not current" if group in led else "no leader")
            for group, name in groups.items()
            if led.get(group) != []
        ]

    def wait_settled(self, timeout: float = 30.0) -> float:
        """Until every replicated stream and consumer has a leader with all its replicas current
        (a node answers MQTT before it has caught up; a kill soon after one is restarted could
        otherwise take the only current copy). Gives up after ``timeout`` with a warning on
        stdout, since a cluster that never settles fails the test that needs it; the seconds it
        took."""
        began = time.monotonic()
        while True:
            left = self.unsettled()
            if not left or time.monotonic() - began > max(timeout, 1.0):
                break
            time.sleep(0.2)
        if left:
            print(f"[cluster] not settled after {timeout:.0f} s: {'; '.join(left[:5])}")
        return time.monotonic() - began

    def start_callout(self, index: int) -> None:
        """Node ``index``'s auth callout, unless it runs (it connects once the node is up)."""
        if index in self.callouts and self.callouts[index].poll() is None:
            return
        log = open(self.callout_log_path(index), "ab")  # noqa: SIM115 - the child holds it
        self.callouts[index] = subprocess.Popen(
            [sys.executable, "-m", "order_service", "cluster-callout", "--node", str(index)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()

    def stop_callout(self, index: int, sig: int = signal.SIGTERM) -> None:
        """Stop node ``index``'s auth callout (``signal.SIGKILL``: kill -9) and wait for it."""
        _end(self.callouts.pop(index), sig)

    def callout_log_path(self, index: int) -> Path:
        return self.node(index).conf.parent / f"callout{index}.log"

    def wait_ready(self, index: int, timeout: float = 60.0) -> None:
        """Until node ``index`` accepts the probe's MQTT CONNECT (``/healthz`` answers seconds earlier)."""
        if self.probe is None:
            self.probe = cluster.ensure_probe(self.settings)
        node, (username, secret) = self.node(index), self.probe
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            proc = self.procs.get(index)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"NATS node {index} exited:\n{self.log(index)[-3000:]}")
            if cluster.mqtt_ready(node.host, node.mqtt_port, username, secret, timeout=2.0):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"NATS node {index} did not accept MQTT within {timeout:.0f} s:\n{self.log(index)[-3000:]}"
        )

    def pid(self, index: int) -> int:
        return self.procs[index].pid

    def send(self, index: int, sig: int) -> None:
        """Send ``sig`` to node ``index`` (SIGSTOP pauses it, SIGCONT resumes, SIGHUP reloads)."""
        self.procs[index].send_signal(sig)

    def reload(self) -> None:
        """SIGHUP every running node: it re-reads its configuration and users file."""
        for index, proc in self.procs.items():
            if proc.poll() is None:
                self.send(index, signal.SIGHUP)

    def stop(self, index: int, sig: int = signal.SIGTERM) -> None:
        """Stop node ``index`` (``signal.SIGKILL``: kill -9) and wait for it."""
        _end(self.procs.pop(index), sig)

    def close(self) -> None:
        for index in list(self.procs):
            self.stop(index)
        for index in list(self.callouts):
            self.stop_callout(index)

    def log(self, index: int) -> str:
        path = self.node(index).log
        return path.read_text(errors="replace") if path.exists() else ""


def _end(proc: subprocess.Popen, sig: int) -> None:
    """Stop a child (``signal.SIGKILL``: kill -9) and wait for it."""
    if sig == signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
    else:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a paused process cannot stop
        stop_group(proc, sig)


def start_bare_cluster(
    data_dir: Path, logins: Iterable[tuple[str, str, Iterable[str]]], nodes: int = NODES
) -> NatsCluster:
    """A cluster without the service (the benchmarks' bare broker), without the auth callout: its
    users file holds ``logins`` (username, secret, ACL rules as the ACL file words them, e.g.
    ``read orders/#``)."""
    nats = NatsCluster(cluster_env(data_dir, nodes, ORDERBUS_CLUSTER_AUTH_CALLOUT="false"))
    nats.probe = cluster.ensure_probe(nats.settings)
    for node in nats.nodes:
        node.store.mkdir(parents=True, exist_ok=True)
        node.conf.write_text(cluster.render_node(node, nats.nodes))
    users = [(username, nats_logins.hash_secret(secret), rules) for username, secret, rules in logins]
    nats_logins.write_users(nats.settings, nats_logins.render(users, nats_logins.probe_hash(nats.settings)))
    try:
        nats.start()
    except BaseException:
        nats.close()
        raise
    return nats


class ClusterSystem(System):
    """The system (API, relay; more with :meth:`start`) on a NATS cluster it stops when closed."""

    def __init__(self, env: dict, tmp: Path, nats: NatsCluster) -> None:
        super().__init__(env, tmp)
        self.cluster = nats

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.cluster.close()


def make_cluster_system(tmp_path: Path, nodes: int = NODES, **extra_env: str) -> ClusterSystem:
    """The system on a fresh ``nodes``-node cluster: migrate, bootstrap, the nodes' configurations,
    the nodes (each answering MQTT), then the relay and the API (two workers); admin logged in."""
    env = cluster_env(tmp_path / "var", nodes, ORDERBUS_API_WORKERS="2", **extra_env)
    for step in ("migrate", "bootstrap"):
        result = cli(env, step)
        if result.returncode != 0:
            raise RuntimeError(f"order_service {step} failed:\n{result.stderr}")
    nats = NatsCluster(env)
    nats.write_configs()
    system = ClusterSystem(env, tmp_path, nats)
    try:
        nats.start()
        for name in ("relay", "api"):
            system.start(name)
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        system.admin.login("admin", password)
    except BaseException:
        system.close()
        raise
    return system
