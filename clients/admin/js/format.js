// Labels, money and times for display.

export const STATUS_LABELS = {
  placed: "Placed", confirmed: "Confirmed", preparing: "Preparing", ready: "Ready",
  picked_up: "Picked up", delivered: "Delivered", failed: "Failed", cancelled: "Cancelled", rejected: "Rejected",
};

// The admin's verb for each move the lifecycle offers.
export const MOVE_LABELS = {
  confirmed: "Confirm", preparing: "Start preparing", ready: "Mark ready", cancelled: "Cancel",
  rejected: "Reject", picked_up: "Mark picked up", delivered: "Mark delivered", failed: "Mark failed",
};

export const DELAY_LABELS = {
  unconfirmed: "not confirmed in time", unassigned: "ready, no agent", ready_late: "late for ready",
  delivery_late: "late delivery",
};

/** An agent's presence as the page says it ("unknown": its device has never connected). */
export function presenceLabel(presence) {
  return presence?.state === "unknown" || !presence?.state ? "not seen yet" : presence.state;
}

export function money(cents, currency = "USD") {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});

/** What operators call an order: its number of the day ("#1042"), else a short form of its id. */
export function orderLabel(order) {
  return Number.isInteger(order?.number) ? `#${order.number}` : shortId(order?.id || "");
}

/** An id without its kind prefix, cut to 6 characters: enough to tell orders apart on a board. */
export function shortId(id) {
  return id.replace(/^[a-z]+_/, "").slice(0, 6);
}

/** How long ago, in words an operator reads at a glance: "just now", "12 min", "2 h 5 min", "3 d". */
export function age(iso, now = Date.now()) {
  const at = Date.parse(iso || "");
  if (Number.isNaN(at)) return "";
  const minutes = Math.max(0, Math.floor((now - at) / 60000));
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

/** Cents as the number a person types ("12.50"), and back; null when it is not money. */
export function centsToInput(cents) {
  return Number.isInteger(cents) ? (cents / 100).toFixed(2) : "";
}

export function inputToCents(text, { signed = false } = {}) {
  const match = /^\s*([+-])?\s*(\d{1,7})(?:[.,](\d{1,2}))?\s*$/.exec(String(text ?? ""));
  if (!match || (match[1] === "-" && !signed)) return null;
  const cents = Number(match[2]) * 100 + Number((match[3] || "0").padEnd(2, "0"));
  return match[1] === "-" ? -cents : cents;
}

export function clock(iso) {
  return iso ? timeFormat.format(new Date(iso)) : "";
}

export function when(iso) {
  return iso ? dateTimeFormat.format(new Date(iso)) : "";
}

/** An element with optional class and text: the page builds its DOM with these, never innerHTML. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
