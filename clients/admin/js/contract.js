// The public MQTT contract, as the dashboard reads it: topic names, which topic a message
// is about, and the version rule. The JavaScript copy of contract/__init__.py; both are
// checked against docs/asyncapi.yaml by tests/test_contract.py.
//
//   orders/new                  retained: the newest order, when created
//   orders/<order id>/status    retained: the order's current state (empty once cleared)
//   agents/<agent id>/assigned  retained: the agent's complete worklist
//   agents/<agent id>/presence  retained: the device's online/offline (its last will)
//   agents/<agent id>/location  retained: the agent's last position (empty once off shift)
//   catalog                     retained: the whole catalog, with its version
//   customers/<user id>/orders  retained: a customer's own orders (its feed)

export const ORDERS_NEW = "orders/new";
export const ORDERS_ALL = "orders/#";
export const AGENTS_ALL = "agents/#";
export const AGENT_PRESENCE_FILTER = "agents/+/presence";
export const AGENT_ASSIGNED_FILTER = "agents/+/assigned";
export const AGENT_LOCATION_FILTER = "agents/+/location";
export const CATALOG = "catalog";
export const CUSTOMER_ORDERS_FILTER = "customers/+/orders";

export const orderStatus = (orderId) => `orders/${orderId}/status`;
export const agentAssigned = (agentId) => `agents/${agentId}/assigned`;
export const agentPresence = (agentId) => `agents/${agentId}/presence`;
export const agentLocation = (agentId) => `agents/${agentId}/location`;
export const agentLocationReport = (agentId) => `agents/${agentId}/location/report`;
export const customerOrders = (customerId) => `customers/${customerId}/orders`;

function part(topic, first, last) {
  const parts = topic.split("/");
  return parts.length === 3 && parts[0] === first && parts[2] === last && parts[1] ? parts[1] : null;
}

export const orderFromStatusTopic = (topic) => part(topic, "orders", "status");
export const agentFromAssignedTopic = (topic) => part(topic, "agents", "assigned");
export const agentFromPresenceTopic = (topic) => part(topic, "agents", "presence");
export const agentFromLocationTopic = (topic) => part(topic, "agents", "location");
export const customerFromOrdersTopic = (topic) => part(topic, "customers", "orders");

/**
 * What a message is about: {kind, key, version}. kind "order" (key: the order id),
 * "worklist" (the agent id), "presence" (the agent id), "customer" (a customer's feed:
 * the customer's user id), "catalog" (key "catalog") or "other".
 */
export function classify(topic, payload) {
  const order = payload?.order;
  if (topic.startsWith("orders/") && order && typeof order === "object" && !Array.isArray(order)) {
    return { kind: "order", key: String(order.id), version: Number.isInteger(order.version) ? order.version : null };
  }
  let agent = agentFromAssignedTopic(topic);
  if (agent !== null) {
    return { kind: "worklist", key: agent, version: Number.isInteger(payload?.version) ? payload.version : null };
  }
  agent = agentFromPresenceTopic(topic);
  if (agent !== null) return { kind: "presence", key: agent, version: null };
  if (topic === CATALOG) {
    return { kind: "catalog", key: CATALOG, version: Number.isInteger(payload?.version) ? payload.version : null };
  }
  const customer = customerFromOrdersTopic(topic);
  if (customer !== null) {
    return { kind: "customer", key: customer, version: Number.isInteger(payload?.version) ? payload.version : null };
  }
  return { kind: "other", key: null, version: null };
}

/**
 * The version rule: delivery is at least once and a reconnect replays retained state, so
 * a state is news only when its version is newer than the one held (0 when none).
 */
export function isNewer(version, held) {
  return Number.isInteger(version) && version > (held || 0);
}
