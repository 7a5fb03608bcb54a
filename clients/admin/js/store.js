// What the page knows: the newest version of every order, and the agents.
// Delivery is at least once and a reconnect replays retained state, so every
// order is kept at the highest version seen and anything older or equal is dropped
// (the contract's version rule, isNewer).

import { isNewer } from "./contract.js";

export const TABS = [
  { id: "all", label: "All", statuses: null },
  { id: "placed", label: "Placed", statuses: ["placed"] },
  { id: "confirmed", label: "Confirmed", statuses: ["confirmed"] },
  { id: "preparing", label: "Preparing", statuses: ["preparing"] },
  { id: "ready", label: "Ready", statuses: ["ready"] },
  { id: "picked_up", label: "Picked up", statuses: ["picked_up"] },
  { id: "delivered", label: "Delivered", statuses: ["delivered"] },
  { id: "cancelled", label: "Cancelled / rejected", statuses: ["cancelled", "rejected"] },
  { id: "failed", label: "Failed", statuses: ["failed"] },
];

export function tabOf(status) {
  return TABS.find((t) => t.statuses && t.statuses.includes(status))?.id ?? "all";
}

/** Newest first, as GET /orders sorts: created_at, then id, both descending. */
export function newerFirst(a, b) {
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

export class Store {
  constructor() {
    this.orders = new Map();
    this.counts = new Map(); // status -> count
    this.agents = new Map(); // id -> {id, name, active, presence: {state, at}, active_orders, offers, worklist_version}
  }

  /** Keep `order` if it is newer than what we hold. Returns {previous} when applied, null when not. */
  apply(order) {
    const previous = this.orders.get(order.id);
    if (!isNewer(order.version, previous?.version)) return null;
    this.orders.set(order.id, order);
    if (previous) this.counts.set(previous.status, (this.counts.get(previous.status) || 1) - 1);
    this.counts.set(order.status, (this.counts.get(order.status) || 0) + 1);
    return { previous };
  }

  count(tab) {
    if (!tab.statuses) return this.orders.size;
    return tab.statuses.reduce((sum, s) => sum + (this.counts.get(s) || 0), 0);
  }

  setAgents(list) {
    for (const agent of list) {
      const known = this.agents.get(agent.id);
      const presence = agent.presence || { state: "offline", at: null };
      this.agents.set(agent.id, {
        ...agent,
        // A presence message heard after the REST answer was written wins.
        presence: known && newerPresence(known.presence, presence) ? known.presence : presence,
        offers: known?.offers ?? 0,
        worklist_version: Math.max(agent.worklist_version || 0, known?.worklist_version || 0),
        active_orders: known && known.worklist_version > (agent.worklist_version || 0)
          ? known.active_orders : agent.active_orders,
      });
    }
  }

  /** agents/<id>/presence. Returns true when it changed what we show. */
  applyPresence(message) {
    const agent = this.agents.get(message.agent_id);
    if (!agent) return false;
    if (!newerPresence({ state: message.state, at: message.at }, agent.presence)) return false;
    const changed = agent.presence.state !== message.state;
    agent.presence = { ...agent.presence, state: message.state, at: message.at, last_seen: message.at };
    return changed;
  }

  /** agents/<id>/assigned (the complete worklist). Returns true when applied. */
  applyWorklist(worklist) {
    const agent = this.agents.get(worklist.agent_id);
    if (!agent || !isNewer(worklist.version, agent.worklist_version)) return false;
    agent.worklist_version = worklist.version;
    agent.active_orders = worklist.orders.length;
    agent.offers = (worklist.offers || []).length;
    return true;
  }

  agentName(id) {
    if (!id) return "";
    return this.agents.get(id)?.name ?? id;
  }
}

function seenAt(presence) {
  const at = Date.parse(presence?.last_seen || presence?.at || "");
  return Number.isNaN(at) ? 0 : at;
}

function newerPresence(a, b) {
  return seenAt(a) > seenAt(b);
}
