"""Paths, ephemeral ports, the service's CLI and stopping a child started in its own group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nothing listens on right now, chosen by the kernel (never a default port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
