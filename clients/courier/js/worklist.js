// What the courier has: the worklist (newest version only), which orders are new to them,
// and what left the list since last time. Kept in localStorage per agent, so the app opens
// with its last worklist when there is no network, and an order cancelled or reassigned
// while the app was closed is still announced when it opens.

import { isNewer } from "/admin/js/contract.js";

export const AGENT_NEXT = { ready: ["picked_up"], picked_up: ["delivered", "failed"] };
export const FINISHED = new Set(["delivered", "failed", "cancelled", "rejected"]);

export class Worklist {
  constructor(agentId) {
    this.key = `orderbus.courier.worklist.${agentId}`;
    const saved = JSON.parse(localStorage.getItem(this.key) || "null") || {};
    this.version = saved.version || 0;
    this.orders = saved.orders || [];
    this.offers = saved.offers || [];
    this.seen = new Set(saved.seen || []);
  }

  save() {
    const { version, orders, offers } = this;
    localStorage.setItem(this.key, JSON.stringify({ version, orders, offers, seen: [...this.seen] }));
  }

  /**
   * Take a worklist (from the broker or REST) if it is newer than the one held (contract.js's
   * version rule). Returns null when it is not, else what changed: {fresh: ids that were not
   * there before (orders and offers), gone: orders that left the list, ended: offers that left}.
   */
  apply(body) {
    if (!body || !Array.isArray(body.orders) || !isNewer(body.version, this.version)) return null;
    const before = new Map(this.orders.map((o) => [o.id, o]));
    const offeredBefore = new Map(this.offers.map((o) => [o.id, o]));
    const known = new Set([...before.keys(), ...offeredBefore.keys()]);
    this.version = body.version;
    this.orders = body.orders;
    this.offers = Array.isArray(body.offers) ? body.offers : [];
    const now = new Set([...this.orders, ...this.offers].map((o) => o.id));
    const ids = new Set(this.orders.map((o) => o.id));
    const fresh = [...now].filter((id) => !known.has(id) && !this.seen.has(id));
    const gone = [...before.values()].filter((o) => !ids.has(o.id));
    const ended = [...offeredBefore.values()].filter((o) => !now.has(o.id));
    for (const id of this.seen) if (!now.has(id)) this.seen.delete(id);
    this.save();
    return { fresh, gone, ended };
  }

  markSeen(id) {
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.save();
  }

  isNew(id) {
    return !this.seen.has(id);
  }

  order(id) {
    return this.orders.find((o) => o.id === id) || this.offers.find((o) => o.id === id) || null;
  }
}

/** The order's short name: its number when it has one (#1042), else the end of its id. */
export function label(order) {
  return Number.isInteger(order?.number) ? `#${order.number}` : `#${String(order?.id || "").slice(-6)}`;
}

export function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "EUR" }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency || ""}`.trim();
  }
}

/** Links that open navigation: a maps URL (web or the phone's maps app) and a geo: URI. */
export function navigation(order) {
  const where = order.delivery_location;
  const address = order.customer?.address || "";
  const target = where ? `${where.lat},${where.lon}` : address;
  return {
    web: `https://www.google.com/maps/dir/?api=1&destination=${encodeURIComponent(target)}`,
    geo: where ? `geo:${where.lat},${where.lon}?q=${where.lat},${where.lon}` : `geo:0,0?q=${encodeURIComponent(address)}`,
  };
}

/** Is `iso` today, on this phone's clock? */
export function isToday(iso) {
  if (!iso) return false;
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString();
}
