"""The agent's handheld screen (Textual): live worklist, badge, details, one-key actions.

    ┌ Worklist · 2 new ──────────────────────────────┐
    │ ● ord_…  ready      Ada      1 Main St         │  <- table, ● = new
    │   ord_…  picked_up  Bob      2 High St         │
    ├ details of the highlighted order ──────────────┤
    │ Ada  +1 555 0100 · 1 Main St · 2 x Tea · notes │
    └ p picked up · d delivered · s seen · a/x offer ┘

Keys: ``p`` picked up, ``d`` delivered (the allowed next steps, sent over REST
through the device's on-disk queue), ``s`` mark the highlighted order seen,
``a``/``x`` accept/decline the first pending offer, ``q`` quit. Actions taken
while the API is unreachable stay queued and are replayed every 2 s.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from .device import AgentDevice
from .state import AGENT_NEXT


def _label(order: dict) -> str:
    """How people name an order: its number of the day (#12), else its id."""
    return f"#{order['number']}" if order.get("number") is not None else order["id"]


class AgentApp(App):
    TITLE = "orderbus agent"
    CSS = """
    DataTable { height: 1fr; }
    #details { height: auto; min-height: 5; border: round $accent; padding: 0 1; }
    #offers, #status { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("p", "act('picked_up')", "picked up"),
        Binding("d", "act('delivered')", "delivered"),
        Binding("s", "seen", "seen"),
        Binding("a", "offer(True)", "accept offer"),
        Binding("x", "offer(False)", "decline offer"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, device: AgentDevice) -> None:
        super().__init__()
        self.device = device
        self.last_line: dict[str, Any] = {}

    # -- layout and refresh --------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="orders", cursor_type="row")
        yield Static(id="details")
        yield Static(id="offers")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "order", "status", "customer", "address")
        self.set_interval(0.1, self._poll)
        self.set_interval(2.0, self._replay)
        self._render()

    @property
    def badge(self) -> int:
        return self.device.worklist.badge

    def _poll(self) -> None:
        changed = False
        while self.device.next_update(0) is not None:
            changed = True
        if changed:
            self._render()

    def _render(self) -> None:
        worklist = self.device.worklist
        self.sub_title = f"{self.device.agent_id} · {self.badge} new"
        self.title = f"Worklist · {self.badge} new" if self.badge else "Worklist"
        table = self.query_one(DataTable)
        selected = self.selected_id()
        table.clear()
        for order in worklist.orders.values():
            c = order.get("customer", {})
            mark = "●" if order["id"] not in worklist.seen else ""
            table.add_row(
                mark, _label(order), order["status"], c.get("name", ""), c.get("address", ""), key=order["id"]
            )
        if selected in worklist.orders:
            table.move_cursor(row=table.get_row_index(selected))
        offers = [
            f"offer {_label(o)} ({o['status']}): a accept / x decline" for o in worklist.offers.values()
        ]
        self.query_one("#offers", Static).update("\n".join(offers))
        self._show_details()

    def _show_details(self) -> None:
        order = self.device.worklist.orders.get(self.selected_id() or "")
        if order is None:
            self.query_one("#details", Static).update(
                "no assignments" if not self.device.worklist.orders else ""
            )
            return
        c = order.get("customer", {})
        items = ", ".join(f"{i['quantity']} x {i['name']}" for i in order.get("items", []))
        steps = " / ".join(AGENT_NEXT.get(order["status"], ())) or "wait for the shop"
        lines = [
            f"{_label(order)} · {order['id']} · {order['status']}"
            + (f" · ETA {order['eta']}" if order.get("eta") else ""),
            f"{c.get('name', '')}  {c.get('phone', '')}",
            c.get("address", ""),
            items,
            f"notes: {order['notes']}" if order.get("notes") else "",
            f"next: {steps}",
        ]
        self.query_one("#details", Static).update("\n".join(line for line in lines if line))

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # no row under the cursor
            return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def say(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # -- actions (REST calls run on a worker thread) ---------------------------------
    def action_act(self, status: str) -> None:
        order_id = self.selected_id()
        order = self.device.worklist.orders.get(order_id or "")
        if order is None:
            self.say("no order selected")
            return
        if status not in AGENT_NEXT.get(order["status"], ()):
            self.say(f"{order_id} is {order['status']}: {status} is not the next step")
            return
        self.run_worker(lambda: self._send(order_id, status), thread=True, group="rest")

    def _send(self, order_id: str, status: str) -> None:
        outcomes = self.device.act(order_id, status)
        pending = len(self.device.queue.pending())
        text = "; ".join(f"{o.action['order_id']} {o.action['status']}: {o.result}" for o in outcomes)
        if pending:
            text = (text + "; " if text else "") + f"{pending} action(s) queued until the API answers"
        self.call_from_thread(self.say, text)

    def _replay(self) -> None:
        if self.device.queue.pending():
            self.run_worker(self._replay_now, thread=True, group="rest", exclusive=True)

    def _replay_now(self) -> None:
        outcomes = self.device.replay()
        if outcomes:
            text = "; ".join(f"{o.action['order_id']} {o.action['status']}: {o.result}" for o in outcomes)
            self.call_from_thread(self.say, "replayed: " + text)

    def action_seen(self) -> None:
        order_id = self.selected_id()
        self.device.worklist.mark_seen([order_id] if order_id else None)
        self._render()

    def action_offer(self, accept: bool) -> None:
        offer = next(iter(self.device.worklist.offers), None)
        if offer is None:
            self.say("no pending offer")
            return
        self.run_worker(
            lambda: self.call_from_thread(self.say, str(self.device.answer_offer(offer, accept)["result"])),
            thread=True,
            group="rest",
        )


def run_tui(device: AgentDevice) -> None:
    AgentApp(device).run()
