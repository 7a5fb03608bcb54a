// Sends the queued actions (queue.js) over REST, oldest first, each with If-Match.
//
// - 2xx: applied; the entry leaves the queue.
// - No answer (no network, API down) or 401 (log in again): stop here and keep the
//   entry, so later taps never overtake it; flush() runs again on reconnect.
// - 412/409: the order moved since the tap. Read it: already at or past the target (a
//   retry after a lost answer) counts as done, so nothing is applied twice; still in the
//   status it had when tapped and still ours (only its version moved, e.g. a queued
//   "picked up" before a queued "delivered") is sent once more with the new version;
//   anything else (cancelled, reassigned) is a conflict kept for the courier to see.
// - Any other refusal: a conflict too, with the server's reason. Never a silent drop.

import { ApiError } from "/admin/js/api.js";

const PATH_OF = ["placed", "confirmed", "preparing", "ready", "picked_up", "delivered"];

/** Is an order in `status` at or past `target` (the target itself, or later on the happy path)? */
export function reached(status, target) {
  if (status === target) return true;
  const [i, j] = [PATH_OF.indexOf(status), PATH_OF.indexOf(target)];
  return i >= 0 && j >= 0 && i > j;
}

const STATUS_WORDS = { cancelled: "was cancelled", rejected: "was rejected", delivered: "is delivered", failed: "is marked failed" };

export class Sender {
  constructor({ queue, api, agentId, onChange, onApplied }) {
    this.queue = queue;
    this.api = api;
    this.agentId = agentId;
    this.onChange = onChange; // (entries) after every change of the queue
    this.onApplied = onApplied; // (entry, order?) an action the server holds
    this.running = null;
    this.again = false;
  }

  async add(entry) {
    await this.queue.add({ ...entry, agent_id: this.agentId, at: new Date().toISOString() });
    await this.changed();
    return this.flush();
  }

  async changed() {
    this.onChange(await this.queue.all(this.agentId));
  }

  async dismiss(seq) {
    await this.queue.remove(seq);
    await this.changed();
  }

  /** Send what waits; one run at a time (a second call makes the running one look again). */
  flush() {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          for (const entry of await this.queue.all(this.agentId)) {
            if (entry.state !== "pending") continue;
            if (!(await this.send(entry))) return;
            await this.changed();
          }
        } while (this.again);
      } finally {
        this.running = null;
        await this.changed();
      }
    })();
    return this.running;
  }

  /** false: no answer (keep the entry and stop); true: the entry is settled. */
  async send(entry, retried = false) {
    const body = { status: entry.status, reason: `on the courier app at ${entry.at}` };
    if (entry.failure) body.failure = entry.failure;
    if (entry.code) body.code = entry.code; // the customer's delivery code (proof.js)
    const path = `/orders/${encodeURIComponent(entry.order_id)}/status`;
    try {
      const order = await this.api.call("PATCH", path, body, { "If-Match": `"${entry.version}"` });
      await this.queue.remove(entry.seq);
      this.onApplied(entry, order);
      return true;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 0 || err.status === 401 || err.status >= 500) return false;
      if (err.status !== 409 && err.status !== 412) return this.conflict(entry, err.explain());
      let order;
      try {
        order = await this.api.call("GET", `/orders/${encodeURIComponent(entry.order_id)}`);
      } catch (again) {
        if (!(again instanceof ApiError) || again.status === 0 || again.status === 401) return false;
        return this.conflict(entry, "the order is no longer yours");
      }
      if (reached(order.status, entry.status)) {
        await this.queue.remove(entry.seq);
        this.onApplied(entry, order);
        return true;
      }
      if (!retried && order.status === entry.from && order.agent_id === this.agentId) {
        const moved = { ...entry, version: order.version };
        await this.queue.put(moved);
        return this.send(moved, true);
      }
      if (order.agent_id && order.agent_id !== this.agentId) return this.conflict(entry, "the order was given to another courier");
      return this.conflict(entry, `the order ${STATUS_WORDS[order.status] || `is ${order.status.replace("_", " ")}`}`);
    }
  }

  async conflict(entry, detail) {
    await this.queue.put({ ...entry, state: "conflict", detail });
    return true;
  }
}
