// The customer's orders as the page knows them: from REST (GET /orders, on every
// (re)connect) and from the retained topic customers/<userId>/orders. Each order only
// moves forward along the lifecycle, so a copy behind the one shown is older and ignored,
// as is a lower version where both copies carry one (the topic's orders carry none).

export const STEPS = ["placed", "confirmed", "preparing", "ready", "picked_up", "delivered"];
export const ENDED = ["cancelled", "rejected", "failed"];
const RANK = Object.fromEntries([...STEPS.map((s, i) => [s, i]), ...ENDED.map((s) => [s, STEPS.length])]);

export class Orders {
  constructor() {
    this.orders = new Map();
    this.topicVersion = -1;
  }

  /** Apply one copy of an order; true when it changed what the page shows. */
  apply(order) {
    const old = this.orders.get(order.id);
    if (old) {
      // Never back along the lifecycle (a REST answer that left before a topic message came
      // may be older), nor to a lower version of the same order.
      if (RANK[order.status] < RANK[old.status]) return false;
      if (old.version != null && order.version != null && order.version < old.version) return false;
    }
    const merged = { ...old, ...order };
    if (old && order.version == null) merged.version = old.version; // a topic copy keeps the REST version
    if (merged.status !== "picked_up") merged.courier = null; // the courier's name only while on the way
    this.orders.set(order.id, merged);
    return JSON.stringify(old) !== JSON.stringify(merged);
  }

  /** The topic's snapshot: applied unless older than one already seen. */
  applySnapshot(snapshot) {
    if (typeof snapshot.version === "number") {
      if (snapshot.version < this.topicVersion) return false;
      this.topicVersion = snapshot.version;
    }
    let changed = false;
    for (const order of snapshot.orders || []) changed = this.apply(order) || changed;
    return changed;
  }

  /** Newest first. */
  list() {
    return [...this.orders.values()].sort((a, b) => {
      const at = a.created_at || a.status_times?.placed || "";
      const bt = b.created_at || b.status_times?.placed || "";
      return bt.localeCompare(at);
    });
  }

  clear() {
    this.orders.clear();
    this.topicVersion = -1;
  }
}
