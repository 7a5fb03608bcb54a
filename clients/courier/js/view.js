// Drawing the courier app: DOM built with textContent only (nothing from the server is
// parsed as HTML), ids and data- attributes the tests read.

import { AGENT_NEXT, label, money, navigation } from "./worklist.js";

export const $ = (id) => document.getElementById(id);

const STATUS_TEXT = {
  placed: "Placed", confirmed: "Confirmed", preparing: "Preparing", ready: "Ready for pickup",
  picked_up: "Picked up", delivered: "Delivered", failed: "Failed", cancelled: "Cancelled", rejected: "Rejected",
};
const ACTION_TEXT = { picked_up: "Picked up", delivered: "Delivered", failed: "Failed…" };
export const REASON_TEXT = {
  customer_absent: "Customer absent", wrong_address: "Wrong address", refused: "Refused by the customer",
  damaged: "Damaged", other: "Other",
};
const CONN_TEXT = { online: "Online", reconnecting: "Reconnecting…", offline: "Offline" };

export const statusText = (s) => STATUS_TEXT[s] || s;

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

export function showConn(state) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = CONN_TEXT[state] || state;
}

const GEO_TEXT = {
  waiting: "Location: waiting",
  sharing: "Sharing location",
  denied: "Location blocked",
  unavailable: "No location",
  off: "Location off",
};

export function showGeo({ state, sentAt }) {
  const geo = $("geo");
  geo.dataset.state = state;
  geo.textContent = GEO_TEXT[state] || state;
  geo.title = sentAt ? `last sent ${sentAt.toLocaleTimeString()}` : "";
  if (sentAt) geo.dataset.sent = String(sentAt.getTime());
}

export function showBanners(banners, onDismiss) {
  $("banners").replaceChildren(...banners.map((b) => el("div", { class: `banner ${b.kind}`, dataset: { id: b.id, kind: b.kind } },
    el("span", { textContent: b.text }),
    el("button", { type: "button", class: "ghost small", textContent: "OK", onclick: () => onDismiss(b) }))));
}

function secondsLeft(iso) {
  return Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000));
}

/** Offers, each with its countdown and accept / decline (only while online). */
export function showOffers(offers, { online, answering, onAnswer }) {
  $("offers-section").hidden = offers.length === 0;
  $("offers").replaceChildren(...offers.map((o) => {
    const expires = o.offer?.expires_at;
    const left = expires ? secondsLeft(expires) : null;
    const busy = answering.has(o.id);
    return el("li", { class: "card offer fresh", dataset: { id: o.id } },
      el("div", { class: "line" }, el("strong", { textContent: `Offer ${label(o)}` }),
        el("span", { class: "countdown", dataset: { expires: expires || "" }, textContent: left === null ? "" : `${left} s` })),
      el("p", { textContent: `${o.customer?.name || ""} · ${o.customer?.address || ""}` }),
      el("p", { class: "muted", textContent: `${statusText(o.status)} · ${money(o.total_cents, o.currency)}` }),
      el("div", { class: "row-buttons" },
        el("button", { type: "button", class: "ghost decline", textContent: "Decline", disabled: !online || busy || left === 0, onclick: () => onAnswer(o, false) }),
        el("button", { type: "button", class: "accept", textContent: "Accept", disabled: !online || busy || left === 0, onclick: () => onAnswer(o, true) })),
      online ? null : el("p", { class: "muted", textContent: "Answer when back online." }));
  }));
}

/** Count the offers' seconds down, once a second. */
export function tickCountdowns() {
  for (const span of document.querySelectorAll(".countdown[data-expires]")) {
    if (!span.dataset.expires) continue;
    const left = secondsLeft(span.dataset.expires);
    span.textContent = left > 0 ? `${left} s` : "expired";
    if (left === 0) span.closest(".offer")?.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  }
}

export function showOrders(orders, { isNew, pendingOf, statusOf, onOpen }) {
  $("order-count").textContent = String(orders.length);
  $("orders-empty").hidden = orders.length > 0;
  $("orders").replaceChildren(...orders.map((o) => {
    const pending = pendingOf(o.id);
    const status = statusOf(o);
    return el("li", { class: `card order${isNew(o.id) ? " fresh" : ""}`, dataset: { id: o.id, status, pending: String(pending.length) },
      tabIndex: 0, role: "button", onclick: () => onOpen(o.id), onkeydown: (e) => e.key === "Enter" && onOpen(o.id) },
    el("div", { class: "line" }, el("strong", { textContent: label(o) }),
      isNew(o.id) ? el("span", { class: "chip new", textContent: "New" }) : null,
      el("span", { class: `chip s-${status}`, textContent: statusText(status) })),
    el("p", { class: "name", textContent: o.customer?.name || "" }),
    el("p", { class: "muted", textContent: o.customer?.address || "" }),
    el("div", { class: "line" }, el("span", { textContent: `Collect ${money(o.total_cents, o.currency)}` }),
      pending.length ? el("span", { class: "chip pending", textContent: `${pending.length} pending` }) : null));
  }));
}

export function showHistory(finished) {
  $("history-count").textContent = String(finished.length);
  $("history-empty").hidden = finished.length > 0;
  $("history").replaceChildren(...finished.map((o) => {
    const at = o.status_times?.[o.status] || o.updated_at;
    const why = o.failure ? ` · ${REASON_TEXT[o.failure.reason] || o.failure.reason}` : "";
    return el("li", { dataset: { id: o.id, status: o.status } },
      el("span", { textContent: `${label(o)} · ${o.customer?.name || ""}` }),
      el("span", { class: `chip s-${o.status}`, textContent: `${statusText(o.status)}${why} ${at ? new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""}` }));
  }));
}

/** The order's page: who, where, what, how much, and the moves the lifecycle allows. */
export function showDetail(order, { status, pending, onAct, onFail }) {
  $("detail-title").textContent = label(order);
  $("detail-status").textContent = statusText(status);
  $("detail-status").className = `chip s-${status}`;
  $("detail-view").dataset.id = order.id;
  $("detail-view").dataset.status = status;
  $("detail-pending").hidden = pending.length === 0;
  $("detail-pending").textContent = pending.map((p) => `${ACTION_TEXT[p.status] || p.status}: waiting to be sent`).join(" · ");
  const c = order.customer || {};
  $("detail-customer").textContent = c.name || "";
  $("detail-call").href = `tel:${(c.phone || "").replace(/[^+\d]/g, "")}`;
  $("detail-call").textContent = c.phone ? `Call ${c.phone}` : "No phone number";
  $("detail-call").hidden = !c.phone;
  $("detail-address").textContent = c.address || "";
  const nav = navigation(order);
  $("detail-navigate").href = nav.web;
  $("detail-geo").href = nav.geo;
  $("detail-items").replaceChildren(...(order.items || []).map((i) => el("li", {},
    el("span", { textContent: `${i.quantity} × ${i.name}${i.options?.length ? ` (${i.options.join(", ")})` : ""}` }),
    el("span", { class: "muted", textContent: money(i.quantity * i.unit_price_cents, order.currency) }))));
  $("detail-amount").textContent = money(order.total_cents, order.currency);
  $("detail-notes").hidden = !order.notes;
  $("detail-notes").textContent = order.notes ? `Note: ${order.notes}` : "";
  const moves = AGENT_NEXT[status] || [];
  $("detail-actions").replaceChildren(...(moves.length ? moves.map((m) => el("button", {
    type: "button", class: m === "failed" ? "danger" : "", dataset: { action: m }, textContent: ACTION_TEXT[m],
    onclick: () => (m === "failed" ? onFail() : onAct(m)),
  })) : [el("p", { class: "muted", textContent: status === "picked_up" || status === "ready" ? "" : "Wait until the shop has it ready." })]));
}

export function showFailForm(reasons) {
  $("fail-reasons").replaceChildren(...reasons.map((r, i) => el("label", { class: "reason" },
    el("input", { type: "radio", name: "reason", value: r, checked: i === 0 }), el("span", { textContent: REASON_TEXT[r] || r }))));
  $("fail-note").value = "";
  $("fail-error").hidden = true;
  $("fail-form").hidden = false;
  $("detail-actions").hidden = true;
  $("fail-form").scrollIntoView({ block: "start" }); // below the order's details on a phone
}

export function hideFailForm() {
  $("fail-form").hidden = true;
  $("detail-actions").hidden = false;
}
