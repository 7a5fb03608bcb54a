// Proof of delivery at "Delivered" (GET /settings/proof says what the business asks): the
// customer's 4-digit code (they read it on their tracking page) and a photo taken with the
// phone's camera. The code goes with the move, so a delivery without a photo may wait in the
// offline queue like any action; a photo is uploaded first and needs a connection.

import { ApiError } from "/admin/js/api.js";
import { $ } from "./view.js";

const SETTINGS_KEY = "orderbus.courier.proof";
const NEED = { required: "required", optional: "optional" };
const OFFLINE_PHOTO = "Sending the photo needs a connection: try again when you are back online.";

/** The last settings seen (kept for offline starts); `refresh` reads them again. */
export function cachedSettings() {
  return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null") || { pod_code: "off", pod_photo: "optional" };
}

export async function refreshSettings(api) {
  const settings = await api.call("GET", "/settings/proof");
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  return settings;
}

// The form at "Delivered" when a code is asked or a photo required (an optional photo alone: none).
export const asksProof = (s) => s.pod_code !== "off" || s.pod_photo === "required";

export function showProofForm(settings) {
  $("proof-code-field").hidden = settings.pod_code === "off";
  $("proof-code-need").textContent = NEED[settings.pod_code] || "";
  $("proof-photo-field").hidden = settings.pod_photo === "off";
  $("proof-photo-need").textContent = NEED[settings.pod_photo] || "";
  $("proof-code").value = "";
  $("proof-photo").value = "";
  $("proof-error").hidden = true;
  $("proof-submit").disabled = false;
  $("proof-form").hidden = false;
  $("detail-actions").hidden = true;
  $("proof-form").scrollIntoView({ block: "start" });
  if (settings.pod_code !== "off") $("proof-code").focus();
}

export function hideProofForm() {
  $("proof-form").hidden = true;
  $("detail-actions").hidden = false;
}

function fail(text) {
  $("proof-error").textContent = text;
  $("proof-error").hidden = false;
  return "error";
}

/** The form's code and photo, or null (with the reason shown) when the settings are not met. */
export function readProof(settings) {
  const code = settings.pod_code === "off" ? "" : $("proof-code").value.trim();
  const file = settings.pod_photo === "off" ? null : $("proof-photo").files[0] || null;
  if (code && !/^[0-9]{4}$/.test(code)) return fail("The code has 4 digits.") && null;
  if (!code && settings.pod_code === "required") return fail("Enter the 4-digit code the customer sees on their tracking page.") && null;
  if (!file && settings.pod_photo === "required") return fail("Take a photo of the delivery first.") && null;
  return { code, file };
}

function refusal(err, code) {
  const field = err.problem?.errors?.[0]?.field;
  if (field === "code" && code) return "Wrong code: ask the customer to read the 4-digit code on their tracking page again. The order is still picked up.";
  if (field === "code") return "Enter the 4-digit code the customer sees on their tracking page.";
  if (field === "photo") return "Take a photo of the delivery first.";
  return err.explain();
}

/**
 * Upload the photo (if any), then move the order to delivered with the code.
 * "done": delivered; "queue": no connection and no photo, let the queue send the move;
 * "error": refused, the reason is on the form and the order stays picked up.
 */
export async function deliverWithProof(api, order, { code, file }) {
  $("proof-submit").disabled = true;
  try {
    let version = order.version;
    if (file) {
      if (!navigator.onLine) return fail(OFFLINE_PHOTO);
      try {
        version = (await api.uploadPhoto(order, file)).version;
      } catch (err) {
        if (!(err instanceof ApiError) || err.status === 0) return fail(OFFLINE_PHOTO);
        if (err.status === 413) return fail("This photo is too large (5 MB at most): take it again.");
        if (err.problem?.errors?.[0]?.field === "photo") return fail("This file is not a photo (JPEG, PNG or WebP).");
        return fail(`The photo was not taken: ${err.explain()}`);
      }
    }
    const path = `/orders/${encodeURIComponent(order.id)}/status`;
    const body = { status: "delivered", reason: `on the courier app at ${new Date().toISOString()}` };
    if (code) body.code = code;
    for (let attempt = 0; ; attempt += 1) {
      try {
        await api.call("PATCH", path, body, { "If-Match": `"${version}"` });
        return "done";
      } catch (err) {
        if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) return file ? fail("No connection: try again.") : "queue";
        if (err.status === 412 && attempt === 0) { // moved since (our own photo, say): read it, try once more
          const now = await api.call("GET", `/orders/${encodeURIComponent(order.id)}`).catch(() => null);
          if (now?.status === "picked_up") { version = now.version; continue; }
        }
        return fail(refusal(err, code));
      }
    }
  } finally {
    $("proof-submit").disabled = false;
  }
}
