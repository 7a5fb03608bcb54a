"""``python -m broker.supervise``: the embedded broker under a restart loop, as ``make run`` runs it.

honcho stops every process when one exits, so a broker run directly by the Procfile could
not be stopped without stopping the API and the relay too. Under this loop, the broker
(a child process, its pid in ``<ORDERBUS_DATA_DIR>/broker.pid``) may stop and the rest
runs on, its changes waiting in the outbox:

- ``make broker-stop`` writes ``<ORDERBUS_DATA_DIR>/broker.stopped`` and stops the broker:
  it stays down until ``make broker-start`` removes the file;
- any other exit (``kill <pid>``, a crash) starts it again a second later;
- exit status 2 (bad configuration, a port in use) ends the loop: restarting cannot help.

SIGTERM or SIGINT (``Ctrl-C`` on ``make run``) stops the broker and the loop. A stale
``broker.stopped`` is removed when the loop starts: a new ``make run`` starts the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RESTART_SECONDS = 1.0
BAD_CONFIGURATION = 2


def main(argv: list[str]) -> int:
    data_dir = Path(os.environ.get("ORDERBUS_DATA_DIR", "").strip() or "var")
    pid_file, stopped = data_dir / "broker.pid", data_dir / "broker.stopped"
    data_dir.mkdir(parents=True, exist_ok=True)
    stopped.unlink(missing_ok=True)
    child: subprocess.Popen | None = None
    ending = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal ending
        ending = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not ending:
        if stopped.exists():
            time.sleep(0.2)
            continue
        child = subprocess.Popen([sys.executable, "-m", "broker", *argv])
        pid_file.write_text(f"{child.pid}\n")
        status = child.wait()
        pid_file.unlink(missing_ok=True)
        if ending:
            break
        if status == BAD_CONFIGURATION:
            return status
        if stopped.exists():
            print("broker stopped (make broker-start starts it again)", flush=True)
        else:
            print(f"broker exited ({status}); starting it again in {RESTART_SECONDS:.0f} s", flush=True)
            time.sleep(RESTART_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
