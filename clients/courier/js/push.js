// Web Push: alerts for new assignments and offers while the app is closed or in the
// background. The courier turns them on with a tap (browsers ask for the notification
// permission only on a user gesture); the app subscribes through the service worker's
// pushManager with the service's VAPID public key and stores the subscription on the
// service, one per device. The service pushes only while the app is not connected; the
// service worker (sw.js) shows the notification. Delivery goes through the browser's own
// push service (Google's, Mozilla's, Apple's): the phone must reach it.

import { request } from "/admin/js/api.js";

const DEVICE_KEY = "orderbus.courier.device";

/** This installation's id: random, kept across logins (one subscription per device). */
export function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = `dev-${crypto.getRandomValues(new Uint32Array(2)).join("-")}`;
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

export function supported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/** "unsupported", "denied", "default" (not asked yet) or "granted". */
export function permission() {
  return supported() ? Notification.permission : "unsupported";
}

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

const path = (agentId) => `/agents/${encodeURIComponent(agentId)}/push-subscriptions`;

async function subscription(create) {
  const registration = await navigator.serviceWorker.ready;
  const existing = await registration.pushManager.getSubscription();
  if (existing || !create) return existing;
  const { public_key: key } = await request("GET", "/push/key");
  return registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
}

/** Store this device's subscription on the service (the current one, or a new one when
 * ``create``); resolves to true when stored, false when there is none. */
export async function register(api, agentId, create = false) {
  const sub = await subscription(create);
  if (!sub) return false;
  await api.call("POST", path(agentId), { device_id: deviceId(), subscription: sub.toJSON() });
  return true;
}

/** The courier's tap: ask for the permission, then subscribe and store. Throws with a
 * message to show when it cannot. */
export async function enable(api, agentId) {
  if (!supported()) throw new Error("This browser cannot show alerts while the app is closed.");
  const answer = await Notification.requestPermission();
  if (answer !== "granted") throw new Error("Alerts are blocked: allow notifications for this site in the browser's settings.");
  try {
    return await register(api, agentId, true);
  } catch (err) {
    if (err?.status) throw err; // the order service refused: its own message
    throw new Error(`The browser's push service could not be reached (${err?.message || err}). Try again when online.`);
  }
}

/** Logging out: this device stops taking the agent's pushes. */
export async function forget(api, agentId) {
  await api.call("DELETE", `${path(agentId)}?device_id=${encodeURIComponent(deviceId())}`);
}
