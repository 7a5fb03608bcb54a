// REST calls to the order service (same origin), with the admin's bearer token.

export const API = "/api/v1";

/** A refused request: `problem` is the server's application/problem+json body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** What to tell the admin: the server's detail, and the allowed next states for a 409. */
  explain() {
    const allowed = this.problem.allowed;
    const extra = Array.isArray(allowed) ? ` Allowed next: ${allowed.join(", ") || "none"}.` : "";
    return `${this.message}${extra}`;
  }
}

export async function request(method, path, { token, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, { title: "Unreachable", detail: `the order service did not answer (${err.message})` });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async call(method, path, body, headers) {
    try {
      return await request(method, path, { token: this.token, body, headers });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) this.onUnauthorized(err);
      throw err;
    }
  }

  /** Every order, newest first, page by page (at most `cap`). */
  async allOrders(cap = 20000) {
    const orders = [];
    let cursor = null;
    do {
      const query = `?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = await this.call("GET", `/orders${query}`);
      orders.push(...page.orders);
      cursor = page.next_cursor;
    } while (cursor && orders.length < cap);
    return orders;
  }

  agents() { return this.call("GET", "/agents").then((r) => r.agents); }
  lifecycle() { return this.call("GET", "/lifecycle"); }
  /** The route so far of a delivery under way: {order_id, points: [{lat, lon, tst}]}. */
  trail(id) { return this.call("GET", `/orders/${encodeURIComponent(id)}/trail`); }
  history(id) { return this.call("GET", `/orders/${encodeURIComponent(id)}/history`).then((r) => r.history); }

  /** The delivery photo (proof of delivery) as an object URL, or null when there is none. */
  async photoUrl(id) {
    const headers = { Authorization: `Bearer ${this.token}` };
    const response = await fetch(`${API}/orders/${encodeURIComponent(id)}/photo`, { headers }).catch(() => null);
    return response?.ok ? URL.createObjectURL(await response.blob()) : null;
  }

  /** The courier's delivery photo: the file itself is the body. Answers the order. */
  async uploadPhoto(order, file) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json", "Content-Type": file.type || "application/octet-stream" };
    let response;
    try {
      response = await fetch(`${API}/orders/${encodeURIComponent(order.id)}/photo`, { method: "POST", headers, body: file });
    } catch (err) {
      throw new ApiError(0, { title: "Unreachable", detail: `the order service did not answer (${err.message})` });
    }
    const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (response.status === 401) this.onUnauthorized(new ApiError(401, data));
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  setStatus(order, status, reason) {
    const body = { status };
    if (reason) body.reason = reason;
    return this.call("PATCH", `/orders/${encodeURIComponent(order.id)}/status`, body, { "If-Match": `"${order.version}"` });
  }

  assign(order, agentId, offer) {
    return this.call("PUT", `/orders/${encodeURIComponent(order.id)}/agent`, { agent_id: agentId, offer },
      { "If-Match": `"${order.version}"` });
  }

  unassign(order) {
    return this.call("DELETE", `/orders/${encodeURIComponent(order.id)}/agent`, undefined, { "If-Match": `"${order.version}"` });
  }

  catalog() { return this.call("GET", "/catalog"); }
  saveCategory(id, body) {
    return id ? this.call("PATCH", `/catalog/categories/${encodeURIComponent(id)}`, body)
      : this.call("POST", "/catalog/categories", body);
  }
  deleteCategory(id) { return this.call("DELETE", `/catalog/categories/${encodeURIComponent(id)}`); }
  saveItem(id, body) {
    return id ? this.call("PATCH", `/catalog/items/${encodeURIComponent(id)}`, body)
      : this.call("POST", "/catalog/items", body);
  }
  deleteItem(id) { return this.call("DELETE", `/catalog/items/${encodeURIComponent(id)}`); }
  /** The "sold out" switch. */
  setAvailable(id, available) { return this.call("PATCH", `/catalog/items/${encodeURIComponent(id)}`, { available }); }
  /** A new order; the same key for a retry of the same order, so a retry never makes two. */
  placeOrder(body, idempotencyKey) { return this.call("POST", "/orders", body, { "Idempotency-Key": idempotencyKey }); }

  logout() { return this.call("DELETE", "/auth/token"); }
  /** A broker login of this page's own (the broker uses its username as the client id). */
  brokerLogin() { return this.call("POST", "/auth/mqtt-credentials"); }
}
