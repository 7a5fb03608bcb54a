"""Paths, ephemeral ports, the environment of a child, the service's CLI, stopping a child.

A system the harness starts never shares anything with a `make run` on the same machine:
every TCP listener gets a port the kernel chose (:func:`port_env`), the data directory
(database, the relay's wake-up socket) is the caller's, and
the ORDERBUS_* settings of the shell, which configure that `make run`, are left out
(:func:`without_service_settings`).
"""

from __future__ import annotations

import contextlib
import os
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


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now, chosen by the kernel (never a
    default port) and not handed out earlier by this process; all are held until the last
    is chosen, so no two are the same."""
    chosen: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(chosen) < count:
            sock = stack.enter_context(socket.socket())  # held: the kernel will not pick it again
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in HANDED_OUT:
                chosen.append(port)
    HANDED_OUT.extend(chosen)  # shared with the broker's pick_free_port
    return chosen


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
