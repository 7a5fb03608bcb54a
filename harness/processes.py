"""Paths, free ports, the environment of a child, the service's CLI, stopping a child.

A system the harness starts never shares anything with a `make run` on the same machine:
every TCP listener gets a free port of its own (:func:`port_env`), the data directory
(database, the relay's wake-up socket) is the caller's, and
the ORDERBUS_* settings of the shell, which configure that `make run`, are left out
(:func:`without_service_settings`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from broker.server import HANDED_OUT

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Variables of the tests and the benchmarks themselves; every other ORDERBUS_* variable is a
#: setting of the service (order_service/config.py, broker/__main__.py, clients/).
OWN_VARIABLES = ("ORDERBUS_TEST_", "ORDERBUS_CHAOS_SCALE", "ORDERBUS_FUZZ_EXAMPLES")

#: The system's TCP listeners, each the variable that moves it: the API, the embedded
#: broker (MQTT and MQTT over WebSocket) and the Socket.IO bridge.
PORT_VARIABLES = (
    "ORDERBUS_API_PORT",
    "ORDERBUS_BROKER_PORT",
    "ORDERBUS_BROKER_WS_PORT",
    "ORDERBUS_SOCKETIO_PORT",
)


class ToolMissing(RuntimeError):
    """A program the tests or benchmarks run is not installed (the tests skip, or fail with CI=true)."""


def require_tool(name: str, package: str, what: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of the program ``name`` (on PATH, else the first of ``also`` there is);
    :class:`ToolMissing`, naming the package to install, if there is none."""
    found = shutil.which(name) or next((path for path in also if os.access(path, os.X_OK)), None)
    if found is None:
        raise ToolMissing(f"{name} is not installed (apt-get install {package}): {what}")
    return found


#: Where the harness's ports are drawn from: under the kernel's ephemeral range (below), which
#: outgoing connections take their source ports from. A port picked must still be free when
#: the system binds it (seconds later, after migrate and bootstrap), and a node killed and
#: started again must find its ports free; in that range any connection made meanwhile
#: could be holding one.
STABLE_PORTS = (20000, 32768)


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (``ip_local_port_range``)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _bindable(block: range, stack: contextlib.ExitStack) -> bool:
    try:
        for port in block:
            stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def stable_ports() -> tuple[int, int]:
    """This process's share of :data:`STABLE_PORTS` below the ephemeral range: under
    pytest-xdist each worker draws from its own slice, so two workers never pick the same port."""
    low, high = STABLE_PORTS[0], min(STABLE_PORTS[1], ephemeral_ports()[0])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and workers.isdigit() and int(workers) > 0:
        width = (high - low) // int(workers)
        low += int(worker[2:]) % int(workers) * width
        high = low + width
    return low, high


_next_stable: list[int] = []  # where this process's next draw starts (a random first one)


def free_port_blocks(count: int, size: int) -> list[int]:
    """``count`` first ports of ``size`` consecutive free ports each, none shared: drawn in turn
    through :func:`stable_ports` (so a port comes round again only after all the others) when
    it is wide enough, else chosen by the kernel."""
    low, high = stable_ports()
    stable = high - low > 100 * size
    if stable and not _next_stable:
        _next_stable.append(random.randrange(low, high - size))
    firsts: list[int] = []
    taken: set[int] = set()
    tries = 0
    while len(firsts) < count:
        tries += 1
        if tries > 100_000:
            raise RuntimeError(f"no {size} free consecutive ports found in {low}-{high}")
        with contextlib.ExitStack() as stack:
            if stable:
                first = _next_stable[0] if _next_stable[0] + size <= high else low
                _next_stable[0] = first + size
            else:
                sock = stack.enter_context(socket.socket())
                sock.bind(("127.0.0.1", 0))
                first = sock.getsockname()[1]
            block = range(first, first + size)
            if first + size > 65535 or any(p in taken or (not stable and p in HANDED_OUT) for p in block):
                continue
            if not _bindable(block if stable else block[1:], stack):
                continue
        firsts.append(first)
        taken.update(block)
    HANDED_OUT.extend(sorted(taken))
    return firsts


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now (never a default port), not handed
    out earlier by this process: drawn, like :func:`free_port_blocks`, below the ephemeral range,
    so that no outgoing connection takes one before the system binds it."""
    return free_port_blocks(count, 1)


def free_port() -> int:
    return free_ports(1)[0]


def port_env() -> dict[str, str]:
    """A port of its own for every TCP listener of the system (:data:`PORT_VARIABLES`)."""
    return dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))


def without_service_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the service's ORDERBUS_* settings: in a shell they configure the
    `make run` there (its ports, broker, database), never a system the harness starts."""
    return {k: v for k, v in environ.items() if not k.startswith("ORDERBUS_") or k.startswith(OWN_VARIABLES)}


def child_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a system process: this one's without the shell's service settings,
    the virtualenv's programs first on PATH, ``data_dir``, a port of its own for every
    listener, then ``settings``."""
    return {
        **without_service_settings(os.environ),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ORDERBUS_DATA_DIR": str(data_dir),
        **port_env(),
        **settings,
    }


def cli(env: dict, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """``python -m order_service ARGS`` in the repository, with ``env``; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "order_service", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
    )


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a child we started (its own process group) and wait for it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass
