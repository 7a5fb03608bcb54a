// The cart (kept in localStorage, so a reload keeps it) and the catalog prices it shows
// before the order is placed. The server prices the order; these are only the menu's.

const CART_KEY = "orderbus.shop.cart";
const PENDING_KEY = "orderbus.shop.pending-order";
const MAX_LINES = 50; // the server takes at most 100 lines; a cart stays well below
const MAX_QUANTITY = 99;

/** Find an item (and its category) in a catalog body. */
export function findItem(catalog, itemId) {
  for (const category of catalog?.categories || []) {
    const item = category.items.find((i) => i.id === itemId);
    if (item) return item;
  }
  return null;
}

/** A line's unit price from the catalog (item plus its options), or null when gone from it. */
export function unitPrice(catalog, line) {
  const item = findItem(catalog, line.item_id);
  if (!item) return null;
  const deltas = line.option_ids.map((id) => item.options.find((o) => o.id === id)?.price_delta_cents ?? 0);
  return item.price_cents + deltas.reduce((a, b) => a + b, 0);
}

export class Cart {
  constructor(onChange) {
    this.onChange = onChange;
    try {
      this.lines = JSON.parse(localStorage.getItem(CART_KEY)) || [];
    } catch {
      this.lines = [];
    }
  }

  save() {
    localStorage.setItem(CART_KEY, JSON.stringify(this.lines));
    this.onChange();
  }

  count() { return this.lines.reduce((n, l) => n + l.quantity, 0); }

  /** Same item with the same options: one line, more of it. */
  add(itemId, optionIds, quantity) {
    const options = [...optionIds].sort();
    const key = `${itemId}|${options.join(",")}`;
    const line = this.lines.find((l) => `${l.item_id}|${l.option_ids.join(",")}` === key);
    if (line) line.quantity = Math.min(MAX_QUANTITY, line.quantity + quantity);
    else if (this.lines.length < MAX_LINES) this.lines.push({ item_id: itemId, option_ids: options, quantity });
    this.save();
  }

  setQuantity(index, quantity) {
    if (quantity <= 0) this.lines.splice(index, 1);
    else this.lines[index].quantity = Math.min(MAX_QUANTITY, quantity);
    this.save();
  }

  clear() {
    this.lines = [];
    this.save();
  }

  /** Total at the catalog's prices, and the lines no longer orderable (gone or sold out). */
  estimate(catalog) {
    let cents = 0;
    const blocked = [];
    this.lines.forEach((line, index) => {
      const item = findItem(catalog, line.item_id);
      if (!item || !item.available) blocked.push(index);
      cents += (unitPrice(catalog, line) ?? 0) * line.quantity;
    });
    return { cents, blocked };
  }
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The Idempotency-Key of the order about to be placed: kept (in localStorage) for as long
 * as the body is the same, so a retry, a double tap or a reload mid-request sends the same
 * key and the server makes one order; another body gets a new key.
 */
export function idempotencyKey(body) {
  const text = JSON.stringify(body);
  let pending = null;
  try {
    pending = JSON.parse(localStorage.getItem(PENDING_KEY));
  } catch { /* a new key below */ }
  if (!pending || pending.body !== text) {
    pending = { key: newKey(), body: text };
    localStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  }
  return pending.key;
}

export function forgetPending() {
  localStorage.removeItem(PENDING_KEY);
}
