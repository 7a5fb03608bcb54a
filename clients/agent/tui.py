"""Interactive mode without a TUI library yet: a readable console view.

Prints the worklist on every change and reads the same commands as ``--json``
(``pickup <order>``, ``deliver <order>``, ``seen``, ``accept``/``decline <order>``).
A full-screen Textual TUI is planned (issue #5).
"""

from __future__ import annotations

import json
import sys


def _render(line: dict) -> None:
    if line.get("event") != "worklist":
        print(json.dumps(line))
        return
    print(f"\n== worklist v{line['version']}  [{line['badge']} new] ==")
    for o in line["orders"]:
        c = o["customer"]
        items = ", ".join(f"{i['quantity']}x {i['name']}" for i in o["items"])
        mark = "*" if o["new"] else " "
        print(f"{mark} {o['id']}  {o['status']:<10} {c.get('name', '')} - {c.get('address', '')}")
        print(f"    {items}" + (f"  notes: {o['notes']}" if o["notes"] else ""))
        if o["actions"]:
            print(f"    next: {' / '.join(o['actions'])}")
    for o in line["offers"]:
        print(f"? offer {o['id']} ({o['status']}): accept {o['id']} / decline {o['id']}")
    sys.stdout.flush()


def run_tui(device) -> None:
    from .__main__ import run_headless

    run_headless(device, emit=_render)
