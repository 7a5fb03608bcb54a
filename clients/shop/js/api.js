// REST calls for the shop: the dashboard's client (same origin, bearer token, problem+json
// errors as ApiError) with the customer's endpoints.

import { Api, ApiError, request } from "/admin/js/api.js";

export { ApiError, request };

export class ShopApi extends Api {
  /** The menu: anyone may read it, logged in or not. */
  catalog() { return this.token ? this.call("GET", "/catalog") : request("GET", "/catalog"); }

  /** This customer's orders, newest first (the server shows a customer only theirs). */
  orders() { return this.call("GET", "/orders?limit=50").then((r) => r.orders); }

  order(id) { return this.call("GET", `/orders/${encodeURIComponent(id)}`); }

  history(id) { return this.call("GET", `/orders/${encodeURIComponent(id)}/history`).then((r) => r.history); }

  /** What a delivery asks (proof of delivery): {pod_code, pod_photo}. */
  proofSettings() { return this.call("GET", "/settings/proof"); }

  place(body, key) { return this.call("POST", "/orders", body, { "Idempotency-Key": key }); }

  cancel(order) {
    return this.call("PATCH", `/orders/${encodeURIComponent(order.id)}/status`,
      { status: "cancelled", reason: "cancelled by the customer" });
  }
}
