// The shop: browse the menu, fill a cart, log in or sign up, place the order, then follow
// it live. Routes are the URL's hash: #/ menu, #/cart, #/login, #/orders, #/orders/<id>.

import { el, money } from "/admin/js/format.js";
import { ApiError, request, ShopApi } from "./api.js";
import { Cart, findItem, forgetPending, idempotencyKey, unitPrice } from "./cart.js";
import { Live } from "./live.js";
import { Menu } from "./menu.js";
import { Orders } from "./store.js";
import { renderHistory, renderTrack, setProofSettings } from "./track.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "orderbus.shop.session";
const DETAILS_KEY = "orderbus.shop.details";
const STATE_TEXT = { online: "Live", syncing: "Updating…", reconnecting: "Reconnecting…", offline: "Offline" };
const VIEWS = ["menu", "cart", "login", "orders", "track"];

let session = null; // {token, user, expires_at}
let api = new ShopApi(null, () => {});
let live = null;
let expiryTimer = null;
let afterLogin = "#/";
const orders = new Orders();
const reasons = new Map(); // order id -> the reason given when it was cancelled or rejected
const cart = new Cart(() => renderCart());
const menu = new Menu({ cart });

// -- routes ---------------------------------------------------------------------
function route() {
  const hash = location.hash || "#/";
  const [, view = "", id] = hash.match(/^#\/([a-z]*)\/?(.*)$/) || [];
  let name = { "": "menu", cart: "cart", login: "login", orders: id ? "track" : "orders" }[view] || "menu";
  if ((name === "orders" || name === "track") && !session) {
    afterLogin = hash;
    name = "login";
  }
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== name;
  document.body.dataset.view = name;
  $("cartbar").hidden = name !== "menu" || cart.count() === 0;
  if (name === "track") showTrack(decodeURIComponent(id));
  if (name === "orders") renderHistory(orders.list());
  if (name === "cart") renderCart();
  if (name === "login") $("l-username").focus();
  window.scrollTo(0, 0);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// -- the connection indicator ------------------------------------------------------
function onState(state) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = STATE_TEXT[state] || "";
  conn.hidden = !state || state === "none";
}

// -- session ------------------------------------------------------------------------
function saveSession(token, user, expiresIn) {
  session = { token, user, expires_at: Date.now() + expiresIn * 1000 };
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY));
    if (saved?.token && saved.expires_at > Date.now()) return saved;
  } catch { /* none */ }
  localStorage.removeItem(SESSION_KEY);
  return null;
}

function endSession(message) {
  live?.stop();
  live = null;
  clearTimeout(expiryTimer);
  session = null;
  api = new ShopApi(null, () => {});
  localStorage.removeItem(SESSION_KEY);
  orders.clear();
  reasons.clear();
  renderAccount();
  onState(navigator.onLine ? "none" : "offline");
  if (message) {
    afterLogin = location.hash && location.hash !== "#/login" ? location.hash : "#/";
    showLoginError(message);
    go("#/login");
  }
}

function renderAccount() {
  $("nav-login").hidden = Boolean(session);
  $("nav-orders").hidden = !session;
  $("logout").hidden = !session;
  $("who").textContent = session ? `Logged in as ${session.user.display_name || session.user.username}.` : "";
  $("checkout-login").hidden = Boolean(session);
  if (session && !$("c-name").value) $("c-name").value = session.user.display_name || "";
}

async function startSession() {
  const token = session.token;
  const current = () => session?.token === token;
  api = new ShopApi(token, () => current() && endSession("Your session ended: please log in again."));
  renderAccount();
  clearTimeout(expiryTimer);
  expiryTimer = setTimeout(() => current() && endSession("Your session ended: please log in again."),
    Math.min(session.expires_at - Date.now(), 2 ** 31 - 1));
  // The orders over REST straight away; the live feed then keeps them current.
  api.orders().then((list) => current() && applyOrders(list)).catch(() => {});
  api.proofSettings().then((s) => { if (current()) { setProofSettings(s); if (tracking) renderTracked(); } }).catch(() => {});
  let lastRelogin = 0;
  live = new Live({
    api,
    userId: session.user.id,
    handlers: {
      onState: (state) => current() && onState(state),
      onCatalog: (body) => current() && menu.apply(body) && renderCart(),
      onOrders: (snapshot) => current() && orders.applySnapshot(snapshot) && renderOrders(),
      onResync: ({ catalog, orders: list }) => {
        if (!current()) return;
        if (menu.apply(catalog)) renderCart();
        applyOrders(list);
      },
      onRefused: () => {
        // The broker login ended (with the token: the REST 401 ends the session) or was
        // refused a topic: at most one new login per 10 s.
        const wait = Math.max(0, lastRelogin + 10000 - Date.now());
        setTimeout(() => {
          if (!current() || !live) return;
          lastRelogin = Date.now();
          live.relogin();
        }, wait);
      },
    },
  });
  live.start();
}

function applyOrders(list) {
  let changed = false;
  for (const order of list) changed = orders.apply(order) || changed;
  if (changed) renderOrders();
}

// -- log in / sign up ---------------------------------------------------------------
let signup = false;

function setMode(isSignup) {
  signup = isSignup;
  $("tab-login").setAttribute("aria-selected", String(!signup));
  $("tab-signup").setAttribute("aria-selected", String(signup));
  for (const node of document.querySelectorAll(".signup-only")) node.hidden = !signup;
  $("l-password").autocomplete = signup ? "new-password" : "current-password";
  $("login-submit").textContent = signup ? "Create account" : "Log in";
  showLoginError("");
}

function showLoginError(message) {
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("l-username").value.trim();
  const password = $("l-password").value;
  if (!username || !password) return showLoginError("Enter a username and a password.");
  $("login-submit").disabled = true;
  try {
    if (signup) {
      const body = { username, password };
      const name = $("l-display").value.trim();
      if (name) body.display_name = name;
      await request("POST", "/auth/signup", { body });
    }
    const body = await request("POST", "/auth/token", { body: { username, password } });
    if (body.user.role !== "customer") {
      await request("DELETE", "/auth/token", { token: body.access_token }).catch(() => {});
      throw new ApiError(403, { detail: "This is a staff account: the shop is for customers." });
    }
    $("l-password").value = "";
    if (session) endSession(); // another account on this page: the previous one's feed stops
    saveSession(body.access_token, body.user, body.expires_in);
    startSession();
    go(afterLogin);
    afterLogin = "#/";
  } catch (err) {
    showLoginError(err instanceof ApiError ? fieldErrors(err) : String(err));
  } finally {
    $("login-submit").disabled = false;
  }
}

const FIELD_NAMES = {
  "customer.name": "Name", "customer.phone": "Phone", "customer.address": "Address", notes: "Notes",
  username: "Username", password: "Password", display_name: "Your name",
};

/** The server's detail, with the fields it names in the customer's words (a cart line by its item). */
function fieldErrors(err) {
  const fields = (err.problem.errors || []).map((e) => {
    const line = /^items\.(\d+)/.exec(e.field);
    const item = line && findItem(menu.catalog, cart.lines[Number(line[1])]?.item_id);
    const name = item ? item.name : FIELD_NAMES[e.field] || e.field;
    return `${name}: ${e.message}`;
  }).filter((text) => !err.message.includes(text.split(": ").slice(1).join(": ")));
  return [err.message, ...fields].join(" ");
}

// -- cart and checkout -------------------------------------------------------------
function renderCart() {
  const catalog = menu.catalog;
  const count = cart.count();
  const { cents, blocked } = cart.estimate(catalog);
  const currency = catalog?.currency || "EUR";
  $("cartbar-count").textContent = `${count}`;
  $("cartbar-total").textContent = money(cents, currency);
  $("cartbar").hidden = document.body.dataset.view !== "menu" || count === 0;
  $("cart-empty").hidden = count > 0;
  $("checkout").hidden = count === 0;
  $("cart-total").hidden = count === 0;
  $("cart-total").textContent = `Total at menu prices: ${money(cents, currency)}`;
  $("cart-lines").replaceChildren(...cart.lines.map((line, index) => {
    const item = findItem(catalog, line.item_id);
    const li = el("li", `line${blocked.includes(index) ? " sold-out" : ""}`);
    li.dataset.item = line.item_id;
    const name = el("span", "line-name", item?.name || "No longer on the menu");
    const options = line.option_ids.map((id) => item?.options.find((o) => o.id === id)?.name).filter(Boolean);
    if (options.length) name.append(el("span", "hint", ` (${options.join(", ")})`));
    if (blocked.includes(index) && item) name.append(el("span", "tag", "Sold out"));
    const stepper = el("span", "stepper");
    const minus = el("button", "ghost", "−");
    const plus = el("button", "ghost", "+");
    for (const [button, delta, label] of [[minus, -1, "One less"], [plus, 1, "One more"]]) {
      button.type = "button";
      button.setAttribute("aria-label", `${label} ${item?.name || ""}`);
      button.addEventListener("click", () => cart.setQuantity(index, line.quantity + delta));
    }
    stepper.append(minus, el("output", null, String(line.quantity)), plus);
    const price = unitPrice(catalog, line);
    li.append(name, stepper, el("span", "line-price", price == null ? "" : money(price * line.quantity, currency)));
    return li;
  }));
  const placing = Boolean(placingNow);
  $("place").disabled = placing || !session || blocked.length > 0 || count === 0;
  $("place").textContent = placing ? "Placing…" : blocked.length ? "Remove sold-out items" : "Place order";
}

function orderBody() {
  const customer = { name: $("c-name").value.trim(), phone: $("c-phone").value.trim(), address: $("c-address").value.trim() };
  localStorage.setItem(DETAILS_KEY, JSON.stringify({ ...customer, location: deliveryLocation }));
  const body = {
    customer,
    items: cart.lines.map((l) => ({ item_id: l.item_id, quantity: l.quantity, option_ids: l.option_ids })),
  };
  const notes = $("c-notes").value.trim();
  if (notes) body.notes = notes;
  if (deliveryLocation) body.delivery_location = deliveryLocation;
  return body;
}

let placingNow = null;

function placeOrder(event) {
  event.preventDefault();
  if (placingNow) return placingNow; // a double tap: the order is on its way already
  if (!session || cart.count() === 0) return null;
  const body = orderBody();
  const missing = ["name", "phone", "address"].filter((f) => !body.customer[f]);
  if (missing.length) return showCheckoutError(`Please fill in your ${missing.join(", ")}.`);
  const key = idempotencyKey(body);
  placingNow = (async () => {
    showCheckoutError("");
    renderCart();
    // The same key on every try: however many times this goes out, the server makes one order.
    for (let attempt = 1; ; attempt += 1) {
      try {
        const order = await api.place(body, key);
        forgetPending();
        cart.clear();
        orders.apply(order);
        go(`#/orders/${encodeURIComponent(order.id)}`);
        return;
      } catch (err) {
        const retry = err instanceof ApiError && (err.status === 0 || err.status === 503 || err.status >= 500);
        if (err instanceof ApiError && err.status === 409) loadCatalog(); // sold out meanwhile: show which
        if (!retry || attempt >= 5) {
          showCheckoutError(err instanceof ApiError ? fieldErrors(err) : String(err));
          return;
        }
        showCheckoutError(`Still sending your order (try ${attempt + 1})…`);
        await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
      }
    }
  })().finally(() => {
    placingNow = null;
    renderCart();
  });
  return placingNow;
}

function showCheckoutError(message) {
  $("checkout-error").textContent = message;
  $("checkout-error").hidden = !message;
}

let deliveryLocation = null; // {lat, lon} from "Use my location"

function locate() {
  const status = $("locate-status");
  if (!navigator.geolocation) {
    status.textContent = "This browser cannot tell your location.";
    return;
  }
  status.textContent = "Finding you…";
  navigator.geolocation.getCurrentPosition((pos) => {
    deliveryLocation = { lat: Math.round(pos.coords.latitude * 1e5) / 1e5, lon: Math.round(pos.coords.longitude * 1e5) / 1e5 };
    status.textContent = `Location added (±${Math.round(pos.coords.accuracy)} m)`;
  }, (err) => {
    deliveryLocation = null;
    status.textContent = err.code === 1 ? "Location not allowed: the address will do." : "Location unavailable.";
  }, { enableHighAccuracy: true, timeout: 10000, maximumAge: 60000 });
}

// -- orders and tracking -------------------------------------------------------------
let tracking = null; // the id on the tracking page

function renderOrders() {
  if (document.body.dataset.view === "orders") renderHistory(orders.list());
  if (tracking) renderTracked();
}

async function showTrack(id) {
  tracking = id;
  $("track-error").hidden = true;
  if (!orders.orders.has(id)) {
    $("track-title").textContent = "Order";
    try {
      orders.apply(await api.order(id));
    } catch (err) {
      $("track-error").textContent = err instanceof ApiError ? err.message : String(err);
      $("track-error").hidden = false;
      return;
    }
  }
  renderTracked();
}

function renderTracked() {
  if (document.body.dataset.view !== "track") return;
  const order = orders.orders.get(tracking);
  if (!order) return;
  renderTrack(order, { reason: reasons.get(order.id) });
  const needsReason = ["cancelled", "rejected"].includes(order.status) && !order.reason && !reasons.has(order.id);
  if (needsReason) {
    reasons.set(order.id, "");
    api.history(order.id).then((history) => {
      const last = [...history].reverse().find((h) => h.to_status === order.status);
      reasons.set(order.id, last?.reason || "");
      renderTracked();
    }).catch(() => reasons.delete(order.id));
  }
}

async function cancelTracked() {
  const order = orders.orders.get(tracking);
  if (!order || order.status !== "placed") return;
  $("cancel").disabled = true;
  try {
    const updated = await api.cancel(order);
    if (orders.apply(updated)) renderOrders();
  } catch (err) {
    $("track-error").textContent = err instanceof ApiError ? err.message : String(err);
    $("track-error").hidden = false;
  } finally {
    $("cancel").disabled = false;
  }
}

// -- start ----------------------------------------------------------------------------
async function loadCatalog() {
  try {
    if (menu.apply(await api.catalog())) renderCart();
  } catch (err) {
    $("menu-status").hidden = false;
    $("menu-status").textContent = `The menu could not be loaded (${err.message}); retrying…`;
    setTimeout(loadCatalog, 5000);
  }
}

function setup() {
  $("login-form").addEventListener("submit", onLogin);
  $("tab-login").addEventListener("click", () => setMode(false));
  $("tab-signup").addEventListener("click", () => setMode(true));
  $("checkout").addEventListener("submit", placeOrder);
  $("locate").addEventListener("click", locate);
  $("cancel").addEventListener("click", cancelTracked);
  $("logout").addEventListener("click", () => {
    api.logout().catch(() => {});
    endSession();
    go("#/");
  });
  // "Arriving … (in N min)" stays true while the page is open.
  setInterval(() => tracking && renderTracked(), 30000);
  window.addEventListener("hashchange", (event) => {
    // To the login from elsewhere (the cart's "log in" link): come back there afterwards.
    const from = new URL(event.oldURL).hash;
    if (location.hash === "#/login" && from !== "#/login" && !session) afterLogin = from || "#/";
    route();
  });
  // Without a login the menu has no live feed: reload it now and then, and when back online.
  setInterval(() => !session && navigator.onLine && loadCatalog(), 30000);
  window.addEventListener("online", () => !session && (onState("none"), loadCatalog()));
  window.addEventListener("offline", () => !session && onState("offline"));
  try {
    const details = JSON.parse(localStorage.getItem(DETAILS_KEY)) || {};
    $("c-name").value = details.name || "";
    $("c-phone").value = details.phone || "";
    $("c-address").value = details.address || "";
    deliveryLocation = details.location || null;
  } catch { /* none saved */ }
  session = loadSession();
  if (session) startSession();
  else renderAccount();
  loadCatalog();
  route();
}

setup();
