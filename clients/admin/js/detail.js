// The detail pane: the selected order's facts, items, dispatch state, timeline
// (GET /orders/<id>/history) and the actions the lifecycle allows an admin.

import { ApiError } from "./api.js";
import { dispatchNotes } from "./board.js";
import { MOVE_LABELS, STATUS_LABELS, age, el, money, orderLabel, presenceLabel, when } from "./format.js";

const $ = (id) => document.getElementById(id);

export class Detail {
  constructor({ store, api, lifecycle, me, onChanged }) {
    this.store = store;
    this.me = me; // the logged-in admin's user id: "you" in the timeline
    this.api = api;
    this.lifecycle = lifecycle; // GET /lifecycle
    this.onChanged = onChanged; // (order from a REST answer) -> apply it like a message
    this.order = null;
    this.historyVersion = 0;
    this.busy = false;
    // Handlers as properties: a new session's pane replaces the last one's.
    $("assign-btn").onclick = () => this.assign(false);
    $("offer-btn").onclick = () => this.assign(true);
    $("unassign-btn").onclick = () => this.run(() => this.api.unassign(this.order));
    $("detail-close").onclick = () => this.close();
    $("detail").onkeydown = (e) => e.key === "Escape" && this.close();
    $("detail-title").textContent = "Select an order";
    $("detail-hint").hidden = false;
    $("detail-body").hidden = true;
    $("detail").classList.remove("open");
  }

  /** On a narrow screen the detail is a sheet over the board: closing it returns to the row. */
  close() {
    const id = this.order?.id;
    $("detail").classList.remove("open");
    document.querySelector(`#orders li[data-id="${CSS.escape(id || "")}"] button`)?.focus();
  }

  show(id) {
    this.order = null;
    this.historyVersion = 0;
    $("action-error").hidden = true;
    $("action-reason").value = "";
    $("assign-agent").value = ""; // preselect this order's agent, not the last order's choice
    this.update(id);
    $("detail").classList.add("open");
    $("detail").focus();
  }

  /** Re-render when the shown order changed (called for every applied batch). */
  update(id) {
    const order = this.store.orders.get(id ?? this.order?.id);
    if (!order || (this.order && order.version === this.order.version && id === undefined)) return;
    this.order = order;
    $("detail-hint").hidden = true;
    $("detail-body").hidden = false;
    $("detail-title").textContent = `Order ${orderLabel(order)}`;
    const status = $("detail-status");
    status.replaceChildren(el("span", `badge status-${order.status}`, STATUS_LABELS[order.status] || order.status),
      ` placed ${when(order.created_at)} · `, el("span", "", ""));
    this.refreshAge();
    $("detail-id").textContent = order.id;
    $("detail-customer").textContent = order.customer.name;
    $("detail-phone").textContent = order.customer.phone;
    $("detail-address").textContent = order.customer.address;
    $("detail-notes").textContent = order.notes || "—";
    $("detail-agent").textContent = order.agent_id ? this.store.agentName(order.agent_id) : "none";
    $("detail-dispatch").replaceChildren(
      ...dispatchNotes(order, this.store).map((n) => el("li", `flag flag-${n.kind}`, n.text)));
    $("detail-items").replaceChildren(...order.items.map((item) => {
      const row = el("tr");
      const name = el("td", "", item.name);
      if (item.options?.length) name.append(el("span", "item-options", item.options.join(", ")));
      row.append(name, el("td", "num", String(item.quantity)),
        el("td", "num", money(item.unit_price_cents * item.quantity, order.currency)));
      return row;
    }));
    $("detail-total").textContent = money(order.total_cents, order.currency);
    this.renderActions();
    this.renderAssign();
    if (order.version !== this.historyVersion) this.loadHistory(order);
  }

  /** The order's age in the status line ("12 min ago"): called again every minute. */
  refreshAge(now = Date.now()) {
    const span = $("detail-status").lastElementChild;
    if (!this.order || !span) return;
    const ago = age(this.order.created_at, now);
    span.id = "detail-age";
    span.textContent = ago === "just now" ? ago : `${ago} ago`;
  }

  renderActions() {
    const order = this.order;
    const moves = this.lifecycle.moves_by_role.admin[order.status] || [];
    $("action-buttons").replaceChildren(...moves.map((status) => {
      const button = el("button", ["cancelled", "rejected"].includes(status) ? "danger" : "", MOVE_LABELS[status] || status);
      button.type = "button";
      button.dataset.move = status;
      button.disabled = this.busy;
      button.addEventListener("click", () =>
        this.run(() => this.api.setStatus(order, status, $("action-reason").value.trim())));
      return button;
    }));
    $("no-actions").hidden = moves.length > 0;
  }

  renderAssign() {
    const order = this.order;
    const assignable = this.lifecycle.assignable.includes(order.status);
    const select = $("assign-agent");
    const current = select.value;
    const agents = [...this.store.agents.values()].filter((a) => a.active);
    select.replaceChildren(...agents.map((a) => {
      const option = el("option", "", `${a.name} — ${presenceLabel(a.presence)}, ${a.active_orders} active`);
      option.value = a.id;
      return option;
    }));
    if (agents.some((a) => a.id === current)) select.value = current;
    else if (current) {
      // The chosen agent left the list (deactivated meanwhile): no silent switch to another.
      select.value = "";
      this.showError(`${this.store.agentName(current)} is no longer active: choose another agent.`);
    } else if (order.agent_id || order.offer) select.value = order.agent_id || order.offer.agent_ids[0];
    $("assign-hint").hidden = assignable;
    for (const id of ["assign-agent", "assign-btn", "offer-btn"]) $(id).disabled = !assignable || !agents.length || this.busy;
    $("assign-btn").textContent = order.agent_id ? "Reassign" : "Assign";
    $("unassign-btn").disabled = !assignable || !(order.agent_id || order.offer) || this.busy;
  }

  assign(offer) {
    const agentId = $("assign-agent").value;
    if (agentId) this.run(() => this.api.assign(this.order, agentId, offer));
    else this.showError("Choose an agent first.");
  }

  showError(text) {
    const error = $("action-error");
    error.textContent = text;
    error.hidden = false;
  }

  async run(action) {
    $("action-error").hidden = true;
    this.busy = true;
    this.renderActions();
    this.renderAssign();
    try {
      const order = await action();
      $("action-reason").value = "";
      this.onChanged(order);
    } catch (err) {
      this.showError(err instanceof ApiError ? err.explain() : String(err));
    } finally {
      this.busy = false;
      if (this.order) {
        this.renderActions();
        this.renderAssign();
      }
    }
  }

  actor(h) {
    if (h.actor && h.actor === this.me) return "you";
    return `${h.actor_role || "system"}${h.actor && h.actor !== "system" ? ` ${h.actor}` : ""}`;
  }

  async loadHistory(order) {
    this.historyVersion = order.version;
    let history;
    try {
      history = await this.api.history(order.id);
    } catch (err) {
      $("timeline").replaceChildren(el("li", "error", `Timeline unavailable: ${err.message}`));
      return;
    }
    if (this.order?.id !== order.id) return;
    const proofAt = this.proofEntry(history);
    $("timeline").replaceChildren(...history.slice().reverse().map((h) => {
      const item = el("li");
      const what = h.from_status && h.from_status !== h.to_status
        ? `${STATUS_LABELS[h.from_status] || h.from_status} → ${STATUS_LABELS[h.to_status] || h.to_status}`
        : h.event.replace(/^order\./, "").replace(/_/g, " ");
      const agent = h.to_agent !== h.from_agent
        ? ` · agent ${h.from_agent ? this.store.agentName(h.from_agent) : "none"} → ${h.to_agent ? this.store.agentName(h.to_agent) : "none"}`
        : "";
      item.append(el("time", "", when(h.at)), el("strong", "", ` ${what}`), el("span", "", agent),
        el("span", "who", ` by ${this.actor(h)}`));
      if (h.reason) item.append(el("q", "", h.reason));
      if (h === proofAt) this.showProof(item, order);
      return item;
    }));
  }

  /** The timeline entry that shows the proof of delivery: the delivery, else the last photo. */
  proofEntry(history) {
    return history.findLast((h) => h.to_status === "delivered" && h.from_status !== h.to_status)
      || history.findLast((h) => (h.reason || "").startsWith("delivery photo"));
  }

  /** Proof of delivery: whether the customer's code was checked, and the courier's photo. */
  async showProof(item, order) {
    const proof = order.proof || {};
    const box = el("div", "proof");
    box.dataset.proof = "";
    box.append(el("span", "proof-facts", `Proof: ${proof.code_checked ? "code checked" : "no code"} · ${proof.photo ? "photo" : "no photo"}`));
    item.append(box);
    if (!proof.photo) return;
    const url = await this.api.photoUrl(order.id);
    if (!url || this.order?.id !== order.id) return;
    if (this.photoUrl) URL.revokeObjectURL(this.photoUrl);
    this.photoUrl = url;
    const link = el("a", "proof-photo");
    link.href = url;
    link.target = "_blank";
    const img = el("img");
    img.id = "detail-photo";
    img.src = url;
    img.alt = `Delivery photo of order ${orderLabel(order)}`;
    link.append(img);
    box.append(link);
  }
}
