// The order board: one <li> per order, keyed by id, updated in place.
// Messages are applied in batches (one DOM pass per burst, never the whole list per
// message); only a large batch (the first sync) rebuilds the list's order at once.

import { DELAY_LABELS, STATUS_LABELS, age, clock, el, money, orderLabel } from "./format.js";
import { TABS, newerFirst, tabOf } from "./store.js";

const FRESH_MS = 10000;
const BULK = 200; // a batch with more new rows than this re-sorts everything in one go

export function dispatchNotes(order, store) {
  const notes = [];
  if (order.offer) {
    const names = order.offer.agent_ids.map((id) => store.agentName(id)).join(", ");
    notes.push({ kind: "offer", text: `Offered to ${names} until ${clock(order.offer.expires_at)}` });
  }
  for (const rule of Object.keys(order.delays || {})) {
    notes.push({ kind: "delay", text: `Late: ${DELAY_LABELS[rule] || rule}` });
  }
  if (order.failure) {
    const note = order.failure.note ? ` (${order.failure.note})` : "";
    notes.push({ kind: "failure", text: `Delivery failed: ${order.failure.reason.replace(/_/g, " ")}${note}` });
  }
  if (order.eta && order.status === "picked_up") notes.push({ kind: "eta", text: `ETA ${clock(order.eta)}` });
  else if (order.promised_at && ["confirmed", "preparing"].includes(order.status)) {
    notes.push({ kind: "eta", text: `Ready by ${clock(order.promised_at)}` });
  }
  return notes;
}

export class Board {
  constructor({ list, empty, tabs, store, onSelect }) {
    this.list = list;
    this.empty = empty;
    this.tabsEl = tabs;
    this.store = store;
    this.onSelect = onSelect;
    this.rows = new Map(); // id -> <li>
    this.sorted = []; // orders, newest first (same objects as the rows show)
    this.tab = "all";
    this.query = "";
    this.selected = null;
    this.tabButtons = new Map();
    this.renderTabs();
    // Handlers as properties: a new session's board replaces the last one's.
    list.onclick = (e) => {
      const row = e.target.closest("li[data-id]");
      if (row) this.onSelect(row.dataset.id);
    };
    list.onkeydown = (e) => this.onKey(e);
  }

  renderTabs() {
    for (const tab of TABS) {
      const button = el("button", "tab");
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.tab = tab.id;
      button.setAttribute("aria-controls", "board");
      button.append(el("span", "tab-label", tab.label), " ", el("span", "count", "0"));
      button.addEventListener("click", () => this.setTab(tab.id));
      button.addEventListener("keydown", (e) => this.onTabKey(e));
      this.tabsEl.append(button);
      this.tabButtons.set(tab.id, button);
    }
    this.setTab("all");
  }

  onTabKey(e) {
    const ids = TABS.map((t) => t.id);
    const at = ids.indexOf(this.tab);
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: ids.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    const id = ids[(next + ids.length) % ids.length];
    this.setTab(id);
    this.tabButtons.get(id).focus();
  }

  onKey(e) {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const row = e.target.closest("li[data-id]");
    if (!row) return;
    e.preventDefault();
    let next = row;
    do {
      next = e.key === "ArrowDown" ? next.nextElementSibling : next.previousElementSibling;
    } while (next && next.hidden);
    next?.querySelector("button").focus();
  }

  setTab(id) {
    this.tab = id;
    for (const [tabId, button] of this.tabButtons) {
      const on = tabId === id;
      button.setAttribute("aria-selected", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    this.refilter();
  }

  setSearch(query) {
    this.query = query.trim().toLowerCase();
    this.refilter();
  }

  matches(order) {
    if (this.tab !== "all" && tabOf(order.status) !== this.tab) return false;
    const q = this.query;
    if (!q) return true;
    const digits = q.replace(/\D/g, "");
    if (/^#\d+$/.test(q)) return order.number === Number(digits); // "#12": that order only
    return order.id.toLowerCase().includes(q)
      || (/^\d+$/.test(q) && order.number === Number(q))
      || order.customer.name.toLowerCase().includes(q)
      || order.customer.phone.toLowerCase().includes(q)
      || (order.customer.address || "").toLowerCase().includes(q)
      || (digits.length >= 3 && order.customer.phone.replace(/\D/g, "").includes(digits));
  }

  refilter() {
    let shown = 0;
    for (const order of this.sorted) {
      const visible = this.matches(order);
      this.rows.get(order.id).hidden = !visible;
      if (visible) shown += 1;
    }
    this.empty.hidden = shown > 0;
  }

  /** Apply one batch: [{order, fresh}] already accepted by the store (newest version each). */
  applyBatch(changes) {
    const added = changes.filter((c) => !this.rows.has(c.order.id));
    for (const change of changes) {
      let row = this.rows.get(change.order.id);
      if (!row) {
        row = this.makeRow(change.order.id);
        this.rows.set(change.order.id, row);
      }
      this.fill(row, change.order);
      if (change.fresh) this.markFresh(row);
    }
    if (added.length > BULK) {
      this.sorted = [...this.store.orders.values()].sort(newerFirst);
      this.list.replaceChildren(...this.sorted.map((o) => this.rows.get(o.id)));
    } else {
      for (const { order } of added) this.insertSorted(order);
    }
    // Rows hold the store's objects: re-point the sorted list at the newest versions.
    for (const { order } of changes) {
      const at = this.indexOf(order);
      if (at >= 0) this.sorted[at] = order;
    }
    let shown = false;
    let hid = false;
    for (const { order } of changes) {
      const visible = this.matches(order);
      this.rows.get(order.id).hidden = !visible;
      if (visible) shown = true;
      else hid = true;
    }
    if (shown) this.empty.hidden = true;
    else if (hid) this.empty.hidden = this.list.querySelector("li:not([hidden])") !== null;
    this.updateCounts();
  }

  /** Where `order` stands (or would stand) in `this.sorted`, newest first: a binary search. */
  position(order) {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (newerFirst(this.sorted[mid], order) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  indexOf(order) {
    const at = this.position(order);
    return this.sorted[at]?.id === order.id ? at : -1;
  }

  insertSorted(order) {
    const lo = this.position(order);
    const before = this.sorted[lo];
    this.sorted.splice(lo, 0, order);
    this.list.insertBefore(this.rows.get(order.id), before ? this.rows.get(before.id) : null);
  }

  updateCounts() {
    for (const tab of TABS) {
      this.tabButtons.get(tab.id).querySelector(".count").textContent = String(this.store.count(tab));
    }
  }

  makeRow(id) {
    const row = el("li", "row");
    row.dataset.id = id;
    const button = el("button", "row-main");
    button.type = "button";
    button.append(
      el("span", "row-number"),
      el("span", "row-name"),
      el("span", "row-phone"),
      el("span", "badge"),
      el("span", "row-total"),
      el("span", "row-age"),
      el("span", "row-address"),
      el("span", "row-agent"),
      el("span", "row-flags"),
    );
    row.append(button);
    if (id === this.selected) button.setAttribute("aria-current", "true");
    return row;
  }

  fill(row, order) {
    const [number, name, phone, badge, total, ago, address, agent, flags] = row.firstChild.children;
    row.dataset.status = order.status;
    row.dataset.version = String(order.version); // internal (the version gate), never shown
    number.textContent = orderLabel(order);
    number.title = order.id;
    name.textContent = order.customer.name;
    phone.textContent = order.customer.phone;
    badge.className = `badge status-${order.status}`;
    badge.textContent = STATUS_LABELS[order.status] || order.status;
    total.textContent = money(order.total_cents, order.currency);
    ago.textContent = age(order.created_at);
    ago.title = `placed at ${clock(order.created_at)}`;
    address.textContent = order.customer.address || "";
    agent.textContent = order.agent_id ? `→ ${this.store.agentName(order.agent_id)}` : "";
    flags.replaceChildren(...dispatchNotes(order, this.store).map((n) => el("span", `flag flag-${n.kind}`, n.text)));
  }

  /** Once a minute: every row's age ("12 min") moves on; text only, and only where it changed. */
  refreshAges(now = Date.now()) {
    for (const order of this.sorted) {
      const ago = this.rows.get(order.id).firstChild.children[5];
      const text = age(order.created_at, now);
      if (ago.textContent !== text) ago.textContent = text;
    }
  }

  /** Agent names changed: rewrite the agent column (cheap: text only). */
  refreshAgents() {
    for (const order of this.sorted) {
      if (order.agent_id || order.offer) this.fill(this.rows.get(order.id), order);
    }
  }

  markFresh(row) {
    row.classList.add("fresh");
    clearTimeout(row.freshTimer);
    row.freshTimer = setTimeout(() => row.classList.remove("fresh"), FRESH_MS);
  }

  select(id) {
    this.rows.get(this.selected)?.firstChild.removeAttribute("aria-current");
    this.selected = id;
    this.rows.get(id)?.firstChild.setAttribute("aria-current", "true");
  }
}
