"""The agent's handheld screen (Textual): live worklist, badge, details, one-key actions.

    ┌ Worklist · 2 new ─────────────── ● online ─────┐  <- the broker link
    │ ● ord_…  ready      Ada      1 Main St         │  <- table, ● = new
    │   ord_…  picked_up  Bob      2 High St         │
    ├ details of the highlighted order ──────────────┤
    │ Ada  +1 555 0100 · 1 Main St · 2 x Tea · notes │
    │ ! ord_… (Cy) was CANCELLED: do not deliver it  │  <- notices
    └ p picked up · d delivered · f failed · s seen  ┘

Keys: ``p`` picked up, ``d`` delivered, ``f`` failed (asks for the reason; the
allowed next steps, sent over REST through the device's on-disk queue), ``s``
mark the highlighted order seen, ``a``/``x`` accept/decline the first pending
offer, ``q`` quit. Actions taken while the API is unreachable stay queued and
are replayed every 2 s. The header shows the broker link (online / reconnecting /
offline); an order cancelled or reassigned away is announced, not just removed.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, OptionList, Static

from .device import AgentDevice
from .state import AGENT_NEXT, FAILURE_REASONS

NOTICE_TEXT = {
    "cancelled": "was CANCELLED: do not deliver it",
    "reassigned": "was REASSIGNED to another agent",
    "finished": "was marked {status} by the shop",
    "removed": "was taken off your list (the API does not answer to say why)",
}
LINK_TEXT = {"online": "● online", "reconnecting": "◌ reconnecting…", "offline": "○ OFFLINE"}


class FailureScreen(ModalScreen[dict | None]):
    """Why the delivery failed: a reason from the list, then a note (required for other)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def compose(self) -> ComposeResult:
        yield Static("Why did the delivery fail? (Enter picks, Escape cancels)")
        yield OptionList(*FAILURE_REASONS, id="reasons")
        yield Input(placeholder="note (required for other), then Enter", id="note")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.reason = FAILURE_REASONS[event.option_index]
        self.query_one("#note", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = getattr(self, "reason", None)
        note = event.value.strip()
        if reason is None or (reason == "other" and not note):
            self.query_one(Static).update("Pick a reason first; other needs a note.")
            return
        self.dismiss({"reason": reason, "note": note} if note else {"reason": reason})


def _label(order: dict) -> str:
    """How people name an order: its number of the day (#12), else its id."""
    return f"#{order['number']}" if order.get("number") is not None else order["id"]


class AgentApp(App):
    TITLE = "orderbus agent"
    CSS = """
    DataTable { height: 1fr; }
    #details { height: auto; min-height: 5; border: round $accent; padding: 0 1; }
    #offers, #status { height: auto; padding: 0 1; }
    #notices { height: auto; padding: 0 1; color: $error; text-style: bold; }
    FailureScreen { align: center middle; }
    FailureScreen > * { width: 60; }
    """
    BINDINGS = [
        Binding("p", "act('picked_up')", "picked up"),
        Binding("d", "act('delivered')", "delivered"),
        Binding("f", "fail", "failed"),
        Binding("s", "seen", "seen"),
        Binding("a", "offer(True)", "accept offer"),
        Binding("x", "offer(False)", "decline offer"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, device: AgentDevice) -> None:
        super().__init__()
        self.device = device
        self.last_line: dict[str, Any] = {}
        self.notices: list[str] = []
        self.link = ""

    # -- layout and refresh --------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="orders", cursor_type="row")
        yield Static(id="details")
        yield Static(id="offers")
        yield Static(id="notices")
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
        if self.device.gone:
            self.run_worker(self._explain, thread=True, group="notices", exclusive=True)
        if (link := self.device.connection()) != self.link:
            self.link = link
            changed = True
        if changed:
            self._render()

    def _explain(self) -> None:
        for n in self.device.notices():
            text = NOTICE_TEXT[n["kind"]].format(status=n.get("status"))
            self.call_from_thread(self.notice, f"! {n['order_id']} ({n['customer']}) {text}")

    def notice(self, text: str) -> None:
        self.notices = [*self.notices, text][-5:]
        self.query_one("#notices", Static).update("\n".join(self.notices))
        self.bell()

    def _render(self) -> None:
        worklist = self.device.worklist
        self.sub_title = f"{LINK_TEXT.get(self.link, self.link)} · {self.device.agent_id} · {self.badge} new"
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

    def action_fail(self) -> None:
        order_id = self.selected_id()
        order = self.device.worklist.orders.get(order_id or "")
        if order is None or "failed" not in AGENT_NEXT.get(order["status"], ()):
            self.say("failed: only an order you picked up")
            return

        def chosen(failure: dict | None) -> None:
            if failure is not None:
                self.run_worker(lambda: self._send(order_id, "failed", failure), thread=True, group="rest")

        self.push_screen(FailureScreen(), chosen)

    def _send(self, order_id: str, status: str, failure: dict | None = None) -> None:
        outcomes = self.device.act(order_id, status, failure)
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
