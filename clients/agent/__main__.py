"""python -m clients.agent: the delivery agent's device.

    python -m clients.agent --user rider1 --password-file rider1.pw --json

``--json`` (headless): one JSON line per worklist change on stdout
(``{"event": "worklist", "version", "badge", "orders": [...], "offers": [...]}``),
plus one line per action outcome (``{"event": "action", "result": "done|already_done|rejected"}``),
per change of the broker link (``{"event": "connection", "state": "online|reconnecting|offline"}``)
and per order that left the worklist without this device finishing it
(``{"event": "notice", "order_id", "kind": "cancelled|reassigned|finished|removed", "status"}``).
Commands on stdin, one per line: ``pickup <order>``, ``deliver <order>``,
``fail <order> <reason> [note ...]`` (reasons: customer_absent, wrong_address, refused,
damaged, other; other needs a note), ``seen [<order> ...]``, ``accept <order>``,
``decline <order>``, ``quit``.
"""

from __future__ import annotations

import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import click

from ..rest import DEFAULT_API, Api
from .device import AgentDevice, DeviceError
from .state import FAILURE_REASONS, StateDir, default_state_dir

ACTIONS = {"pickup": "picked_up", "picked_up": "picked_up", "deliver": "delivered", "delivered": "delivered"}
REPLAY_EVERY = 2.0


def _emit_json(line: dict) -> None:
    sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
    sys.stdout.flush()


def _stdin_lines(into: queue.Queue[str | None]) -> None:
    for line in sys.stdin:
        into.put(line.strip())
    into.put(None)


def failure_of(args: list[str]) -> dict[str, str] | str:
    """``<reason> [note ...]`` as the API's ``failure``, or what is wrong with it."""
    if not args or args[0] not in FAILURE_REASONS:
        return f"fail <order> <reason> [note]: the reason is one of {', '.join(FAILURE_REASONS)}"
    note = " ".join(args[1:]).strip()
    if args[0] == "other" and not note:
        return "fail <order> other <note>: say what happened"
    return {"reason": args[0], "note": note} if note else {"reason": args[0]}


def _act(device: AgentDevice, emit, order_id: str, status: str, failure: dict | None = None) -> None:
    for outcome in device.act(order_id, status, failure):
        emit(outcome.as_dict())
    if device.queue.pending():
        emit({"event": "queued", "pending": len(device.queue.pending())})


def run_headless(device: AgentDevice, emit=None) -> None:
    _emit = emit or _emit_json
    commands: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_stdin_lines, args=(commands,), daemon=True).start()
    last_replay = 0.0
    link = ""
    while True:
        if device.next_update(0.1) is not None:
            _emit(device.worklist.snapshot(device.agent_id))
            for notice in device.notices():
                _emit(notice)
        if (state := device.connection()) != link:
            link = state
            _emit({"event": "connection", "state": state})
        if device.queue.pending() and time.monotonic() - last_replay > REPLAY_EVERY:
            last_replay = time.monotonic()
            for outcome in device.replay():
                _emit(outcome.as_dict())
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command is None:  # stdin closed: keep running (a service), until a signal
            commands = queue.Queue()
            continue
        words = command.split()
        if not words:
            continue
        verb, args = words[0].lower(), words[1:]
        if verb == "quit":
            return
        if verb in ACTIONS and len(args) == 1:
            _act(device, _emit, args[0], ACTIONS[verb])
            last_replay = time.monotonic()
        elif verb == "fail" and args:
            failure = failure_of(args[1:])
            if isinstance(failure, str):
                _emit({"event": "error", "detail": failure})
                continue
            _act(device, _emit, args[0], "failed", failure)
            last_replay = time.monotonic()
        elif verb == "seen":
            device.worklist.mark_seen(args or None)
            _emit(device.worklist.snapshot(device.agent_id))
        elif verb in ("accept", "decline") and len(args) == 1:
            _emit(device.answer_offer(args[0], verb == "accept"))
        else:
            _emit({"event": "error", "detail": f"unknown command {command!r}"})


@click.command()
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="ORDERBUS_API")
@click.option("--mqtt", "mqtt_url", help="broker URL (default: the one the API issues with the login)")
@click.option(
    "--mqtt-ca-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="ORDERBUS_MQTT_CA_FILE",
    help="mqtts:// or wss://: trust this CA file instead of the system's",
)
@click.option("--user", "username", required=True, help="the agent's username")
@click.option("--password-file", type=click.File(), help="file holding the agent's password")
@click.option("--password", envvar="ORDERBUS_AGENT_PASSWORD", help="or the password itself")
@click.option(
    "--state-dir", type=click.Path(path_type=Path), help="default ~/.local/state/orderbus/agent-<user>"
)
@click.option("--json", "as_json", is_flag=True, help="headless: one JSON line per worklist change")
def main(api, mqtt_url, mqtt_ca_file, username, password_file, password, state_dir, as_json) -> None:
    """Log in as a delivery agent and follow the worklist live."""
    secret = password_file.read().strip() if password_file else password
    if not secret:
        raise click.UsageError("give --password-file or --password (or ORDERBUS_AGENT_PASSWORD)")
    device = AgentDevice(
        Api(api),
        StateDir(state_dir or default_state_dir(username)),
        mqtt_url=mqtt_url,
        mqtt_ca_file=mqtt_ca_file,
    )
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        device.login(username, secret, allow_offline=True)
        device.connect(keep_trying=True)  # the broker down too: start, say so, connect when it is back
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if as_json:
            run_headless(device)
        else:
            from .tui import run_tui

            run_tui(device)
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()


if __name__ == "__main__":
    main()
