"""The peers under test, each started as a real process on ephemeral ports, pinned to a core.

A child inherits the CPU affinity of the process that starts it, so :func:`pinned` narrows
our own affinity to the server's core while it starts, then gives it back; the load
generator (this process and the Node swarm) runs on the other core.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import contract
from broker.credfiles import hash_password, render_acl, render_password_file
from broker.server import pick_free_port
from clients.rest import dashboard_logins
from harness.cluster import NatsCluster, make_cluster_system, start_bare_cluster
from harness.mosquitto import Mosquitto
from harness.postgres import admin_connection, database_url, drop_database
from harness.processes import ROOT, stop_group, without_service_settings
from harness.system import COMMANDS, System, make_system

NODE_DIR = Path(__file__).resolve().parent / "node"

# Logins for the bare-broker benchmarks, in the same files both brokers read: a publisher
# and one login per subscriber, as both brokers use a login's username as its client id.
PUBLISHER = {"username": "bench-pub", "password": "bench-pub-secret"}
SUBSCRIBERS = [{"username": f"bench-sub-{i}", "password": f"bench-sub-secret-{i}"} for i in range(1000)]


def cores() -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): one each when there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wait_port(host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def write_logins(directory: Path) -> tuple[Path, Path]:
    """A password file and an ACL (Mosquitto's formats) for the bench publisher and subscriber."""
    directory.mkdir(parents=True, exist_ok=True)
    passwd, acl = directory / "passwd", directory / "acl"
    passwd.write_text(
        render_password_file({u["username"]: hash_password(u["password"]) for u in (PUBLISHER, *SUBSCRIBERS)})
    )
    acl.write_text(
        render_acl(
            [
                (PUBLISHER["username"], [f"write {contract.ORDERS_ALL}", f"write {contract.AGENTS_ALL}"]),
                *(
                    (u["username"], [f"read {contract.ORDERS_ALL}", f"read {contract.AGENTS_ALL}"])
                    for u in SUBSCRIBERS
                ),
            ]
        )
    )
    return passwd, acl


class Peer:
    """A server process under test; ``port``/``ws_port`` for the clients, ``pids()`` for RSS."""

    name = "peer"
    port = ws_port = 0
    all_cores = False  # True: not pinned to the server's core (the whole machine, shared with the load)

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def spread(self, logins: list[dict]) -> list[dict]:
        """The subscribers' logins, each naming the node it connects to (a cluster's; else as given)."""
        return logins

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


class EmbeddedBrokerPeer(Peer):
    """Our broker, ``python -m broker``, secured by the bench logins."""

    name = "embedded"

    def start(self) -> EmbeddedBrokerPeer:
        passwd, acl = write_logins(self.workdir / "mqtt")
        self.port = pick_free_port("127.0.0.1")
        self.ws_port = pick_free_port("127.0.0.1", avoid=self.port)
        env = {
            **without_service_settings(os.environ),
            "ORDERBUS_BROKER_PORT": str(self.port),
            "ORDERBUS_BROKER_WS_PORT": str(self.ws_port),
            "ORDERBUS_BROKER_PASSWORD_FILE": str(passwd),
            "ORDERBUS_BROKER_ACL_FILE": str(acl),
            "ORDERBUS_LOG_LEVEL": "WARNING",
        }
        self._spawn(COMMANDS["broker"], env)
        for port in (self.port, self.ws_port):
            wait_port("127.0.0.1", port, self.proc, self.workdir / f"{self.name}.log")
        return self


class MosquittoPeer(Peer):
    """Mosquitto from the repository's mosquitto.conf (ports and paths rewritten), same logins."""

    name = "mosquitto"

    def start(self) -> MosquittoPeer:
        passwd, acl = write_logins(self.workdir / "mqtt")
        self.server = Mosquitto(self.workdir, passwd, acl).start()
        self.proc, self.port, self.ws_port = self.server.process, self.server.port, self.server.ws_port
        return self

    def stop(self) -> None:
        self.server.stop()
        self.proc = None


class NatsClusterPeer(Peer):
    """Three NATS nodes (JetStream, MQTT, streams replicated on all three) as ``make run-cluster``
    configures them, the bench logins in their users file. The publisher connects to node 1, the
    subscribers to nodes 2, 3, 1, 2, ... (:meth:`spread`): most messages cross a route."""

    name = "nats-cluster"

    def start(self) -> NatsClusterPeer:
        publish = [f"write {contract.ORDERS_ALL}", f"write {contract.AGENTS_ALL}"]
        read = [f"read {contract.ORDERS_ALL}", f"read {contract.AGENTS_ALL}"]
        logins = [(PUBLISHER["username"], PUBLISHER["password"], publish)]
        logins += [(u["username"], u["password"], read) for u in SUBSCRIBERS]
        self.nats: NatsCluster = start_bare_cluster(self.workdir / "var", logins)
        self.port, self.ws_port = self.nats.nodes[0].mqtt_port, self.nats.nodes[0].ws_port
        return self

    def spread(self, logins: list[dict]) -> list[dict]:
        nodes = self.nats.nodes
        chosen = [nodes[(i + 1) % len(nodes)] for i in range(len(logins))]
        return [
            {**login, "port": node.mqtt_port, "ws_port": node.ws_port}
            for login, node in zip(logins, chosen, strict=True)
        ]

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.nats.procs.values()]

    def stop(self) -> None:
        self.nats.close()


class NodePeer(Peer):
    """node/server.js: the Socket.IO room emit (B2) and the seed-style order server (B3)."""

    name = "socketio"

    def start(self) -> NodePeer:
        self.port = pick_free_port("127.0.0.1")
        self._spawn([node(), "server.js", str(self.port), str(self.workdir)], cwd=NODE_DIR)
        wait_port("127.0.0.1", self.port, self.proc, self.workdir / f"{self.name}.log")
        return self


class SystemPeer(Peer):
    """broker (or Mosquitto), relay and API (granian) as in production; the admin logged in."""

    def __init__(
        self,
        workdir: Path,
        production: bool = False,
        env: dict[str, str] | None = None,
        name: str | None = None,
        all_cores: bool = False,
        cluster: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.production = production
        self.cluster = cluster  # three NATS nodes in place of the broker (with production: PostgreSQL)
        self.env = env or {}
        self.name = name or ("production" if production else "embedded-defaults")
        self.all_cores = all_cores
        self.mosquitto: Mosquitto | None = None
        self.database: str | None = None
        self.system: System

    def start(self) -> SystemPeer:
        extra = {"ORDERBUS_LOG_LEVEL": "WARNING", **self.env}
        if self.production:
            self.database = f"orderbus_bench_{os.getpid()}"
            with contextlib.closing(admin_connection()) as conn, conn.cursor() as cur:
                drop_database(conn, self.database)
                cur.execute(f'CREATE DATABASE "{self.database}"')
            extra["ORDERBUS_DATABASE_URL"] = database_url(self.database)
        if self.cluster:  # the relay on node 1, the admin's subscriber on node 2
            cluster_system = make_cluster_system(self.workdir, **extra)
            self.system, self.mosquitto = cluster_system, None
            self.port = cluster_system.cluster.node(2).mqtt_port
        else:  # production: a Mosquitto from the repository's mosquitto.conf, started after bootstrap
            self.system = make_system(self.workdir, "mosquitto" if self.production else "amqtt", **extra)
            self.mosquitto = self.system.mosquitto
            broker_port = int(self.system.env["ORDERBUS_BROKER_PORT"])
            self.port = self.mosquitto.port if self.mosquitto else broker_port
        self.login = self.system.admin.login(
            "admin", (self.workdir / "var" / "admin-password").read_text().strip()
        )
        return self

    @property
    def api(self) -> str:
        return self.system.api_url

    def dashboard_logins(self, count: int) -> list[dict]:
        """``count`` dashboard broker logins, one per simulated dashboard."""
        password = (self.workdir / "var" / "admin-password").read_text().strip()
        return dashboard_logins(self.api, "admin", password, count)

    def pids(self) -> list[int]:
        found = []
        for name, proc in self.system.procs.items():
            found.append(proc.pid)
            if name == "api":  # granian's workers
                found += children(proc.pid)
        if self.mosquitto and self.mosquitto.process:
            found.append(self.mosquitto.process.pid)
        if self.cluster:
            found += [proc.pid for proc in self.system.cluster.procs.values()]
        return found

    def stop(self) -> None:
        self.system.close()
        if self.database:
            with contextlib.closing(admin_connection()) as conn:
                drop_database(conn, self.database)


def processes(peer: Peer) -> dict[str, int | list[int]]:
    """The peer's processes by name: broker, relay, api (the HTTP server's main process) and each api
    worker; in production also Mosquitto and PostgreSQL's processes (its backends for the
    peer's database together, its background processes together); for the Node peer its
    one process."""
    if not isinstance(peer, SystemPeer):
        return {"node": peer.pids()[0]}
    found: dict[str, int | list[int]] = {name: proc.pid for name, proc in peer.system.procs.items()}
    for n, pid in enumerate(children(peer.system.procs["api"].pid)):
        found[f"api worker {n + 1}"] = pid
    if peer.mosquitto is not None and peer.mosquitto.process is not None:
        found["mosquitto"] = peer.mosquitto.process.pid
    if peer.database is not None:
        found.update(postgresql_processes(peer.database))
    return found


def postgresql_processes(database: str) -> dict[str, list[int]]:
    """The PostgreSQL server's backends serving ``database``, by the process they serve (their
    ``application_name``: orderbus-api, orderbus-relay-data...), and its background processes,
    when the server runs on this machine (its processes' /proc entries are readable)."""
    with contextlib.closing(admin_connection()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid, datname, application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        )
        rows = cur.fetchall()
    found: dict[str, list[int]] = {}
    for pid, datname, application in rows:
        if datname == database:
            name = f"pg for {application.removeprefix('orderbus-') or 'others'}"
        elif datname is None:
            name = "pg background"
        else:
            continue
        found.setdefault(name, []).append(pid)
    return {name: pids for name, pids in found.items() if Path(f"/proc/{pids[0]}").exists()}


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found += [int(p) for p in task.read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def node() -> str:
    found = shutil.which("node")
    if found is None:
        sys.exit("error: the benchmarks need Node.js (node and npm) for the load generator and the Node peer")
    return found
