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
