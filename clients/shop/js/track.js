// The tracking page of one order and the list of the customer's orders.

import { clock, el, money, STATUS_LABELS } from "/admin/js/format.js";
import { ENDED, STEPS } from "./store.js";

const $ = (id) => document.getElementById(id);
const FAILURE_LABELS = {
  customer_absent: "nobody was there to take it", wrong_address: "the address could not be found",
  refused: "the order was refused at the door", damaged: "the order was damaged", other: "",
};
const dateFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });

/** A status as the customer reads it: the dashboard's words, but "On the way" once picked up. */
function statusLabel(status) {
  return status === "picked_up" ? "On the way" : STATUS_LABELS[status] || status;
}

/** "#1042", or the id's tail for an order made before order numbers. */
export function orderLabel(order) {
  return order.number != null ? `#${order.number}` : `#${order.id.slice(-6)}`;
}

/** Why an order ended, in words: the failure, or the reason given with the last change. */
export function endedText(order, reason) {
  if (order.status === "failed") {
    const failure = order.failure || {};
    const why = [FAILURE_LABELS[failure.reason] ?? failure.reason, failure.note].filter(Boolean).join(": ");
    return `Delivery failed${why ? `: ${why}` : ""}.`;
  }
  const verb = order.status === "rejected" ? "The restaurant could not take this order" : "This order was cancelled";
  return `${verb}${reason ? `: ${reason}` : ""}.`;
}

// The business's proof-of-delivery settings (GET /settings/proof): is a code asked at the door?
let proof = { pod_code: "optional" };
export function setProofSettings(settings) { proof = settings || proof; }

export function renderTrack(order, { reason, now = Date.now() }) {
  $("track").dataset.id = order.id;
  $("track").dataset.status = order.status;
  $("track-title").textContent = `Order ${orderLabel(order)}`;
  const badge = $("track-status");
  badge.textContent = statusLabel(order.status);
  badge.dataset.status = order.status;
  const ended = ENDED.includes(order.status);
  const done = order.status === "delivered";

  const eta = $("track-eta");
  if (done) eta.textContent = `Delivered at ${clock(order.status_times?.delivered)}.`;
  else if (!ended && order.eta) {
    const minutes = Math.max(0, Math.round((Date.parse(order.eta) - now) / 60000));
    eta.textContent = `Arriving around ${clock(order.eta)} (${minutes ? `in ${minutes} min` : "any minute"}).`;
  } else if (ended) eta.textContent = "";
  else if (order.status === "ready") eta.textContent = "Ready: waiting for the courier.";
  else if (order.promised_at && order.status !== "placed") eta.textContent = `Being prepared: ready around ${clock(order.promised_at)}.`;
  else eta.textContent = "Waiting for the restaurant to confirm.";
  eta.hidden = !eta.textContent;

  const courier = order.status === "picked_up" ? order.courier?.first_name : null;
  $("track-courier").hidden = !courier;
  // The courier's position comes only in the feed, only while picked up (issue 19).
  const where = courier ? order.courier?.location : null;
  let seen = "";
  if (where && where.stale) seen = " Their position has not been updated for a while.";
  else if (where) seen = ` Position updated at ${clock(new Date(where.tst * 1000).toISOString())}.`;
  $("track-courier").textContent = courier ? `${courier} is on the way with your order.${seen}` : "";
  $("track-courier").dataset.location = where ? (where.stale ? "stale" : "live") : "none";

  // The delivery code, only this customer's own, while the order is on its way.
  const code = order.status === "picked_up" && proof.pod_code !== "off" ? order.delivery_code : null;
  $("track-code").hidden = !code;
  $("track-code-digits").textContent = code || "";

  $("track-ended").hidden = !ended;
  $("track-ended").textContent = ended ? endedText(order, order.reason || reason) : "";

  // Steps: each reached one with its time; the order's place among them; the rest to come.
  const reached = STEPS.indexOf(order.status);
  $("steps").replaceChildren(...STEPS.map((step, index) => {
    const at = order.status_times?.[step];
    let state = "todo";
    if (at || index < reached) state = "done";
    if (step === order.status) state = done ? "done" : "current";
    if (ended && !at) state = "skipped";
    const li = el("li", `step ${state}`);
    li.dataset.step = step;
    li.dataset.state = state;
    li.append(el("span", "step-dot"), el("span", "step-name", STATUS_LABELS[step]), el("time", "step-time", clock(at)));
    if (at) li.querySelector("time").dateTime = at;
    if (state === "current") li.setAttribute("aria-current", "step");
    return li;
  }));
  if (ended) {
    const li = el("li", "step ended");
    li.dataset.step = order.status;
    li.dataset.state = "current";
    const at = order.status_times?.[order.status];
    li.append(el("span", "step-dot"), el("span", "step-name", STATUS_LABELS[order.status]), el("time", "step-time", clock(at)));
    $("steps").append(li);
  }

  $("cancel").hidden = order.status !== "placed";
  const currency = order.currency;
  $("track-items").replaceChildren(...(order.items || []).map((item) => {
    const li = el("li", "line");
    const name = el("span", "line-name", `${item.quantity} × ${item.name}`);
    if (item.options?.length) name.append(el("span", "hint", ` (${item.options.join(", ")})`));
    li.append(name, el("span", "line-price", money(item.unit_price_cents * item.quantity, currency)));
    return li;
  }));
  $("track-total").textContent = order.total_cents != null ? `Total ${money(order.total_cents, currency)}` : "";
  const address = order.customer?.address || order.customer_address;
  $("track-address").textContent = address ? `To: ${address}` : "";
}

export function renderHistory(orders) {
  $("orders-empty").hidden = orders.length > 0;
  $("order-list").replaceChildren(...orders.map((order) => {
    const li = el("li", "past");
    li.dataset.id = order.id;
    li.dataset.status = order.status;
    const link = el("a", "past-link");
    link.href = `#/orders/${encodeURIComponent(order.id)}`;
    const placed = order.created_at || order.status_times?.placed;
    const count = (order.items || []).reduce((n, i) => n + i.quantity, 0);
    link.append(
      el("span", "past-number", orderLabel(order)),
      el("span", "past-when", placed ? `${dateFormat.format(new Date(placed))}, ${clock(placed)}` : ""),
      el("span", "badge", statusLabel(order.status)),
      el("span", "past-what", `${count} item${count === 1 ? "" : "s"} · ${money(order.total_cents, order.currency)}`),
    );
    link.querySelector(".badge").dataset.status = order.status;
    li.append(link);
    return li;
  }));
}
