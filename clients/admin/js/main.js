// The admin dashboard: log in over REST, then follow the order bus live over MQTT.

import { Api, ApiError, request } from "./api.js";
import { Board } from "./board.js";
import { CatalogEditor, CatalogStore } from "./catalog.js";
import { Detail } from "./detail.js";
import { el, orderLabel, presenceLabel } from "./format.js";
import { Live } from "./live.js";
import { DispatchMap } from "./map.js";
import { PhoneOrder } from "./phone.js";
import { Sound } from "./sound.js";
import { Store } from "./store.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "orderbus.admin.session";
// #map is the board's page with the map alone (a phone's tab; a desktop shows it beside the board).
const VIEWS = { orders: "orders-view", map: "orders-view", catalog: "catalog-view", phone: "phone-view" };
const STATE_TEXT = {
  connecting: "Connecting…", resyncing: "Resyncing…", connected: "Live", reconnecting: "Reconnecting…",
};

let session = null; // {token, user, mqtt}: mqtt is this page's own broker login
let live = null;
let dispatchMap = null;
let ageTimer = null; // the once-a-minute tick that moves every "12 min" on
const sound = new Sound();

// -- log in / out ---------------------------------------------------------------
function showLogin(message) {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  $(message ? "login-password" : "login-username").focus();
}

async function onLogin(event) {
  event.preventDefault();
  sound.unlock(); // a user gesture: the browser lets the page play sound from now on
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  if (!username || !password) return showLogin("Enter your username and password.");
  $("login-submit").disabled = true;
  try {
    const body = await request("POST", "/auth/token", { body: { username, password } });
    if (!body.mqtt) {
      await request("DELETE", "/auth/token", { token: body.access_token }).catch(() => {});
      throw new ApiError(403, { detail: "This account is not an admin: the dashboard is for admins." });
    }
    session = { token: body.access_token, user: body.user, mqtt: body.mqtt };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $("login-password").value = "";
    await startDashboard();
  } catch (err) {
    showLogin(err instanceof ApiError ? err.explain() : String(err));
  } finally {
    $("login-submit").disabled = false;
  }
}

function endSession(message) {
  clearInterval(ageTimer);
  live?.stop();
  live = null;
  dispatchMap?.stop();
  dispatchMap = null;
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  showLogin(message);
  // The board belongs to the session: start from a clean page next time.
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  $("orders").replaceChildren();
  $("catalog-list").replaceChildren();
  $("tabs").replaceChildren();
  $("agents").replaceChildren();
  $("toasts").replaceChildren();
}

// -- the dashboard ------------------------------------------------------------
async function startDashboard() {
  const token = session.token;
  const current = () => session?.token === token; // false once this session has ended
  const api = new Api(token, () => current() && endSession("Your session ended: log in again."));
  if (!session.mqtt) {
    session.mqtt = await api.brokerLogin();
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }
  const lifecycle = await api.lifecycle();
  const store = new Store();
  const board = new Board({
    list: $("orders"), empty: $("board-empty"), tabs: $("tabs"), store,
    onSelect: (id) => select(id),
  });
  const detail = new Detail({
    store, api, lifecycle, me: session.user.id, onChanged: (order) => queueOrder(order, { live: false }),
  });
  const catalog = new CatalogStore();
  async function refreshCatalog() {
    try {
      catalog.apply(await api.catalog());
      $("catalog-error").hidden = true;
    } catch (err) {
      if (!current()) return;
      $("catalog-error").textContent = `The catalog could not be loaded: ${err.message}`;
      $("catalog-error").hidden = false;
    }
  }
  new CatalogEditor({ store: catalog, api, refresh: refreshCatalog });
  new PhoneOrder({ store: catalog, api, onPlaced: (order) => queueOrder(order, { live: false }) });
  $("po-done").onclick = (e) => {
    const link = e.target.closest("a[data-order]");
    if (link) setTimeout(() => select(link.dataset.order)); // after the hash switched the view
  };
  $("who").textContent = session.user.display_name || session.user.username;
  $("login-view").hidden = true;
  $("app-view").hidden = false;

  function select(id) {
    if (location.hash === "#map") location.hash = "#orders"; // a phone: the detail opens over the board
    board.select(id);
    detail.show(id);
    dispatchMap?.selectOrder(id);
  }

  // The map: a courier's marker selects the courier in the agents' list and the order it
  // carries (picked up first) on the board; an order's pin selects the order.
  const config = await fetch("config.json").then((r) => r.json()).catch(() => ({}));
  if (!current()) return;
  dispatchMap?.stop();
  dispatchMap = new DispatchMap({
    container: $("map"), status: $("map-status"), store, api, config: config.map,
    onSelectOrder: (id) => select(id),
    onSelectAgent: (agentId) => {
      selectAgent(agentId);
      const carried = [...store.orders.values()]
        .filter((o) => o.agent_id === agentId && ["picked_up", "ready", "preparing", "confirmed"].includes(o.status))
        .sort((a, b) => (a.status === "picked_up" ? 0 : 1) - (b.status === "picked_up" ? 0 : 1));
      if (carried.length) select(carried[0].id);
    },
  });
  let selectedAgent = null;
  function selectAgent(agentId) {
    selectedAgent = agentId;
    dispatchMap?.selectAgent(agentId);
    for (const item of $("agents").children) {
      if (item.dataset.agent === agentId) {
        item.setAttribute("aria-current", "true");
        item.scrollIntoView({ block: "nearest" });
      } else item.removeAttribute("aria-current");
    }
  }

  // Changes are applied in batches: a burst of messages costs one DOM pass.
  let pending = new Map(); // order id -> {order, fresh}
  let flushTimer = null;
  function queueOrder(order, meta) {
    const accepted = store.apply(order);
    if (!accepted) return; // already seen this version or a newer one
    const isNew = !accepted.previous;
    const fresh = isNew && !meta.firstSync;
    const before = pending.get(order.id);
    pending.set(order.id, { order, fresh: fresh || before?.fresh });
    if (isNew && meta.live && meta.event === "order.created") notifyNew(order);
    else if (meta.live && meta.event === "order.delayed") {
      toast(`Order ${orderLabel(order)} is late: ${meta.reason || meta.delay}`, "warn");
    } else if (meta.live && order.status === "failed" && accepted.previous?.status !== "failed") {
      toast(`Delivery of ${orderLabel(order)} failed: ${order.failure?.reason?.replace(/_/g, " ") || ""}`, "warn");
    } else if (meta.live && (meta.event === "order.offer_declined" || meta.event === "order.offer_expired")) {
      toast(`Order ${orderLabel(order)}: ${meta.reason || "offer ended"}`, "info");
    }
    if (!flushTimer) flushTimer = setTimeout(flush, 16);
  }

  function flush() {
    flushTimer = null;
    if (!current()) return;
    const batch = [...pending.values()].map((change) => ({ ...change, order: store.orders.get(change.order.id) }));
    pending = new Map();
    const started = performance.now();
    board.applyBatch(batch);
    for (const change of batch) dispatchMap?.updateOrder(change.order);
    if (board.selected && batch.some((c) => c.order.id === board.selected)) detail.update();
    performance.measure("orderbus:render", { start: started, end: performance.now(), detail: batch.length });
  }

  function notifyNew(order) {
    toast(`New order ${orderLabel(order)} from ${order.customer.name}`, "new", () => select(order.id));
    sound.play();
  }

  let agentsTimer = null;
  function refreshAgentsSoon() {
    // A message about an agent we do not know (created after our last load): reload the list.
    clearTimeout(agentsTimer);
    agentsTimer = setTimeout(async () => {
      try {
        store.setAgents(await api.agents());
        renderAgents();
      } catch { /* the next resync will load them */ }
    }, 300);
  }

  function renderAgents() {
    if (!current()) return;
    const agents = [...store.agents.values()];
    $("agents").replaceChildren(...agents.map((a) => {
      const item = el("li", `agent presence-${a.presence.state}`);
      item.dataset.agent = a.id;
      item.dataset.presence = a.presence.state;
      if (a.id === selectedAgent) item.setAttribute("aria-current", "true");
      const load = `${a.active_orders} active${a.offers ? `, ${a.offers} offered` : ""}${a.active ? "" : ", deactivated"}`;
      item.append(el("span", "dot", ""), el("span", "agent-name", a.name),
        el("span", "agent-state", presenceLabel(a.presence)), el("span", "agent-load", load));
      item.querySelector(".dot").setAttribute("aria-hidden", "true");
      return item;
    }));
    if (!agents.length) $("agents").append(el("li", "hint", "No agents yet."));
    board.refreshAgents();
    dispatchMap?.refreshAgents();
    if (detail.order) detail.renderAssign();
  }

  function onState(state, detailText) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = STATE_TEXT[state] + (detailText ? ` (${detailText})` : "");
  }

  let lastRelogin = 0;
  live = new Live({
    login: session.mqtt,
    api,
    handlers: {
      onState,
      onOrder: queueOrder,
      onWorklist(worklist, meta) {
        if (!store.agents.has(worklist.agent_id)) return refreshAgentsSoon();
        for (const order of [...worklist.orders, ...(worklist.offers || [])]) {
          queueOrder(order, { ...meta, event: "order.updated" });
        }
        if (store.applyWorklist(worklist)) renderAgents();
      },
      onPresence(message) {
        if (!store.agents.has(message.agent_id)) return refreshAgentsSoon();
        if (store.applyPresence(message)) renderAgents();
      },
      onCatalog: (body) => catalog.apply(body),
      onLocation: (agentId, body) => {
        if (body && !store.agents.has(agentId)) refreshAgentsSoon();
        dispatchMap?.setLocation(agentId, body);
      },
      onResync({ orders, agents, first }) {
        refreshCatalog(); // the retained message comes too; this covers a broker without it
        const started = performance.now();
        store.setAgents(agents);
        for (const order of orders) queueOrder(order, { live: false, firstSync: first });
        renderAgents();
        clearTimeout(flushTimer);
        flush();
        performance.measure("orderbus:resync", { start: started, end: performance.now(), detail: orders.length });
      },
      onRefused: async () => {
        // The broker login ended: with the token (a 401 ends the session through the Api), or
        // alone (a token keeps its 16 newest page logins). At most one new login per 10 s.
        if (Date.now() - lastRelogin < 10000) return;
        lastRelogin = Date.now();
        try {
          const login = await api.brokerLogin();
          if (!current() || !live) return;
          session.mqtt = login;
          sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
          live.relogin(login);
        } catch { /* unreachable: mqtt.js keeps retrying; refused again: the next attempt */ }
      },
    },
  });
  clearInterval(ageTimer);
  ageTimer = setInterval(() => {
    if (!current()) return;
    const now = Date.now();
    board.refreshAges(now);
    detail.refreshAge(now);
  }, 20000); // ages are whole minutes: a tick every 20 s is never more than 20 s behind
  $("search").value = "";
  $("search").oninput = (e) => board.setSearch(e.target.value);
  live.start();
}

// -- pages: the board, the catalog editor, the phone-order form (the URL's #fragment) --
function showView() {
  const name = location.hash.slice(1) in VIEWS ? location.hash.slice(1) : "orders";
  for (const id of new Set(Object.values(VIEWS))) $(id).hidden = id !== VIEWS[name];
  for (const link of $("views").querySelectorAll("a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("search").closest("label").hidden = name !== "orders";
  document.body.dataset.view = name;
  dispatchMap?.refresh(); // its container may have just been shown or resized
}

// -- toasts ---------------------------------------------------------------------
function toast(text, kind, onOpen) {
  const item = el("div", `toast toast-${kind}`);
  const message = el("span", "toast-text", text);
  item.append(message);
  if (onOpen) {
    const open = el("button", "ghost", "Open");
    open.type = "button";
    open.addEventListener("click", () => { onOpen(); item.remove(); });
    item.append(open);
  }
  const close = el("button", "ghost", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => item.remove());
  item.append(close);
  const box = $("toasts");
  box.append(item);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => item.remove(), 8000);
}

// -- page setup -------------------------------------------------------------------
function setup() {
  $("login-form").addEventListener("submit", onLogin);
  window.addEventListener("hashchange", showView);
  showView();
  $("logout").addEventListener("click", async () => {
    const api = new Api(session?.token, () => {});
    try { await api.logout(); } catch { /* ended anyway */ }
    endSession("You are logged out.");
  });
  $("mute").addEventListener("click", () => sound.setMuted(!sound.muted));
  for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, () => sound.unlock(), { once: true });
  sound.onChange = (muted) => {
    $("mute").setAttribute("aria-pressed", String(muted));
    $("mute").textContent = muted ? "Sound off" : "Sound on";
  };
  sound.onChange(sound.muted);
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.body.dataset.view === "orders" && !["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName)) {
      e.preventDefault();
      $("search").focus();
    }
  });
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    // A reload or a duplicated tab: same token, but never the stored broker login, which
    // another page may be using (the broker would let the two take each other's connection).
    session = { ...JSON.parse(saved), mqtt: null };
    startDashboard().catch((err) => endSession(err instanceof ApiError ? err.explain() : String(err)));
  } else {
    showLogin();
  }
}

setup();
