// The durable queue of the courier's actions (IndexedDB): a tap is written here first, then
// sent (sender.js). It survives a reload, a closed app and a phone restart; entries leave it
// only when the server has applied them, or when the courier dismisses a conflict.
//
// An entry: {seq (the key, in tap order), agent_id, order_id, label, status, failure?,
//            version (the order's version when tapped: If-Match), from (the status then),
//            at (when tapped), state: "pending" | "conflict", detail?}

const DB = "orderbus-courier";
const STORE = "actions";

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export class ActionQueue {
  constructor() {
    this.db = null;
  }

  async open() {
    if (this.db) return this.db;
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
    this.db = await promised(request);
    return this.db;
  }

  async store(mode) {
    const db = await this.open();
    return db.transaction(STORE, mode).objectStore(STORE);
  }

  /** Every entry of this agent, oldest tap first. */
  async all(agentId) {
    const entries = await promised((await this.store("readonly")).getAll());
    return entries.filter((e) => e.agent_id === agentId).sort((a, b) => a.seq - b.seq);
  }

  async add(entry) {
    const seq = await promised((await this.store("readwrite")).add({ ...entry, state: "pending" }));
    return { ...entry, seq, state: "pending" };
  }

  async put(entry) {
    await promised((await this.store("readwrite")).put(entry));
  }

  async remove(seq) {
    await promised((await this.store("readwrite")).delete(seq));
  }
}
