// Forms: a refusal (application/problem+json) shown beside the field it names.
//
// The API names a field as a dotted path (`customer.phone`, `items.2.quantity`; some
// answers say `items[2].item_id`). Each form marks where an error goes with
// `data-error-for="<path>"`; an error whose exact path has no place goes to the nearest
// parent path that has one (`items.2.item_id` → `items.2` → `items`), else to the form's
// general message.

import { ApiError } from "./api.js";

/** `items[2].item_id` and `body.items.2.item_id` → `items.2.item_id`. */
export function fieldPath(field) {
  return String(field ?? "").replace(/\[(\d+)\]/g, ".$1").replace(/^\.+/, "").replace(/^body\./, "");
}

export function clearErrors(root) {
  for (const node of root.querySelectorAll("[data-error-for]")) {
    node.textContent = "";
    node.hidden = true;
  }
  for (const input of root.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Show `message` beside the field at `path` (or its nearest parent); false if no place for it. */
export function fieldError(root, path, message) {
  let at = fieldPath(path);
  while (at) {
    const place = root.querySelector(`[data-error-for="${CSS.escape(at)}"]`);
    if (place) {
      place.textContent = place.hidden || !place.textContent ? message : `${place.textContent} ${message}`;
      place.hidden = false;
      const input = place.closest(".field, li, tr")?.querySelector("input, select, textarea");
      input?.setAttribute("aria-invalid", "true");
      return true;
    }
    at = at.includes(".") ? at.slice(0, at.lastIndexOf(".")) : "";
  }
  return false;
}

/**
 * Show a refused request: each named field's message beside it (the form's own wording from
 * `messages` where it has one for that path, else the server's), and in `general` what no field
 * holds (the detail, e.g. "item itm_… is sold out"). Focuses the first field at fault.
 */
export function showProblem(root, general, err, messages = {}) {
  clearErrors(root);
  const errors = err instanceof ApiError && Array.isArray(err.problem.errors) ? err.problem.errors : [];
  const say = (e) => messages[fieldPath(e.field).replace(/\.\d+(?=\.|$)/g, ".*")] || e.message || "invalid";
  const unplaced = errors.filter((e) => !fieldError(root, e.field, say(e)));
  const text = err instanceof ApiError ? err.explain() : String(err);
  if (errors.length && !unplaced.length) {
    general.textContent = `Not saved: ${errors.length === 1 ? "one field" : `${errors.length} fields`} to correct (marked in red).`;
  } else {
    general.textContent = unplaced.length ? `${text} ${unplaced.map((e) => `${e.field}: ${say(e)}`).join("; ")}` : text;
  }
  general.hidden = false;
  root.querySelector("[aria-invalid]")?.focus();
}

/** An Idempotency-Key: random, and made without crypto.randomUUID (only in secure contexts). */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `admin-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}
