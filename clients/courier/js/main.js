// The courier app: login, the live worklist, offers, an order's page, actions through the
// durable queue, announcements and today's history. docs/clients.md describes it.

import { Api, ApiError, request } from "/admin/js/api.js";
import { Live } from "./live.js";
import { asksProof, cachedSettings, deliverWithProof, hideProofForm, readProof, refreshSettings, showProofForm } from "./proof.js";
import { ActionQueue } from "./queue.js";
import * as push from "./push.js";
import { Sender } from "./sender.js";
import { $, REASON_TEXT, hideFailForm, showBanners, showConn, showDetail, showGeo, showFailForm, showHistory, showOffers, showOrders, statusText, tickCountdowns } from "./view.js";
import { FINISHED, Worklist, isToday, label } from "./worklist.js";

const SESSION_KEY = "orderbus.courier.session";
const MUTE_KEY = "orderbus.courier.muted";
const brokerKey = (agentId) => `orderbus.courier.mqtt.${agentId}`;
const historyKey = (agentId) => `orderbus.courier.history.${agentId}`;
const FLUSH_MS = 5000;
const FRESH_LOGIN_MS = 10000; // how long a login issued just now may be refused (the broker reads it late)

let app = null; // the running session: {session, api, worklist, sender, live, ...}
let audio = null;
let bannerSeq = 0;

// -- sound and vibration for a new order ---------------------------------------------
function unlockAudio() {
  if (!audio && window.AudioContext) audio = new AudioContext();
}

function alertNew() {
  const html = document.documentElement;
  if (localStorage.getItem(MUTE_KEY) !== "1" && audio) {
    if (audio.state === "suspended") audio.resume();
    const t = audio.currentTime;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 988;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.3, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.4);
    osc.connect(gain).connect(audio.destination);
    osc.start(t);
    osc.stop(t + 0.45);
    html.dataset.beeps = String(Number(html.dataset.beeps || 0) + 1);
  }
  if (navigator.vibrate && navigator.vibrate([200, 100, 200])) html.dataset.vibrations = String(Number(html.dataset.vibrations || 0) + 1);
}

function showMute() {
  const muted = localStorage.getItem(MUTE_KEY) === "1";
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Sound off" : "Sound on";
}

// -- banners: announcements, and conflicts from the queue -------------------------------
function announce(kind, text) {
  app.banners.push({ id: `b${++bannerSeq}`, kind, text });
  render();
}

function dismiss(banner) {
  if (banner.seq !== undefined) app.sender.dismiss(banner.seq);
  app.banners = app.banners.filter((b) => b.id !== banner.id);
  render();
}

// -- drawing ------------------------------------------------------------------------------
const pendingOf = (id) => app.entries.filter((e) => e.order_id === id && e.state === "pending");
const statusOf = (order) => pendingOf(order.id).at(-1)?.status || order.status;

function render() {
  if (!app) return;
  const online = app.connState === "online";
  const conflicts = app.entries.filter((e) => e.state === "conflict").map((e) => ({
    id: `q${e.seq}`, seq: e.seq, kind: "conflict",
    text: `Not applied: ${e.label} ${statusText(e.status).toLowerCase()}, because ${e.detail}.`,
  }));
  showBanners([...conflicts, ...app.banners], dismiss);
  showOffers(app.worklist.offers, { online, answering: app.answering, onAnswer: answerOffer });
  showOrders(app.worklist.orders, { isNew: (id) => app.worklist.isNew(id), pendingOf, statusOf, onOpen: openDetail });
  showHistory(app.history);
  if (app.detailId) {
    const order = app.worklist.orders.find((o) => o.id === app.detailId);
    if (order) showDetail(order, { status: statusOf(order), pending: pendingOf(order.id), onAct: (s) => (s === "delivered" && asksProof(app.proof) ? showProofForm(app.proof) : act(order, s)), onFail: () => showFailForm(app.reasons) });
    else closeDetail();
  }
}

function openDetail(id) {
  app.detailId = id;
  app.worklist.markSeen(id);
  hideFailForm();
  hideProofForm();
  $("list-view").hidden = true;
  $("detail-view").hidden = false;
  render();
  window.scrollTo(0, 0);
}

function closeDetail() {
  if (!app) return;
  app.detailId = null;
  hideFailForm();
  hideProofForm();
  $("detail-view").hidden = true;
  $("list-view").hidden = false;
}

// -- actions ------------------------------------------------------------------------------
function act(order, status, failure, code) {
  const entry = { order_id: order.id, label: label(order), status, version: order.version, from: statusOf(order) };
  if (failure) entry.failure = failure;
  if (code) entry.code = code;
  if (status !== "picked_up") closeDetail();
  app.sender.add(entry).catch((err) => announce("conflict", `Could not queue the action: ${err.message || err}`));
}

function submitFailure(event) {
  event.preventDefault();
  const order = app.worklist.orders.find((o) => o.id === app.detailId);
  const reason = document.querySelector('#fail-reasons input[name="reason"]:checked')?.value;
  const note = $("fail-note").value.trim();
  if (!order || !reason) return;
  if (reason === "other" && !note) {
    $("fail-error").textContent = "Say what happened in the note.";
    $("fail-error").hidden = false;
    return;
  }
  hideFailForm();
  act(order, "failed", note ? { reason, note } : { reason });
}

async function submitProof(event) {
  event.preventDefault();
  const order = app.worklist.orders.find((o) => o.id === app.detailId);
  const proof = order && readProof(app.proof);
  if (!proof) return;
  const result = await deliverWithProof(app.api, order, proof);
  if (result === "error" || !app) return;
  hideProofForm();
  if (result === "queue") return act(order, "delivered", undefined, proof.code);
  app.finishedHere.add(order.id);
  closeDetail();
  refreshHistory();
}

async function answerOffer(order, accept) {
  app.answering.add(order.id);
  if (!accept) app.declined.add(order.id);
  render();
  try {
    await app.api.call("POST", `/orders/${encodeURIComponent(order.id)}/offer/${accept ? "accept" : "decline"}`);
  } catch (err) {
    app.declined.delete(order.id);
    announce("warn", `${label(order)}: ${err instanceof ApiError ? err.explain() : err.message}`);
  } finally {
    app.answering.delete(order.id);
    render();
  }
}

// -- the worklist and what left it ------------------------------------------------------
function onWorklist(body) {
  const changes = app.worklist.apply(body);
  if (!changes) return;
  if (changes.fresh.length) alertNew();
  for (const order of changes.gone) explainGone(order);
  for (const offer of changes.ended) {
    if (!app.worklist.orders.some((o) => o.id === offer.id) && !app.declined.has(offer.id)) {
      announce("info", `The offer of ${label(offer)} ended: taken by another courier, withdrawn or expired.`);
    }
  }
  render();
}

/** An order left the worklist: finished by this courier (history), or announced. */
async function explainGone(order) {
  const name = label(order);
  if (app.finishedHere.has(order.id)) return refreshHistory();
  let now = null;
  try {
    now = await app.api.call("GET", `/orders/${encodeURIComponent(order.id)}`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) {
      return announce("warn", `${name} (${order.customer?.name || ""}) was reassigned to another courier.`);
    }
    return announce("warn", `${name} was taken off your list.`);
  }
  if (now.status === "cancelled" || now.status === "rejected") {
    announce("cancelled", `${name} (${order.customer?.name || ""}) was cancelled: do not deliver it.`);
  } else if (FINISHED.has(now.status)) {
    announce("info", `${name} was marked ${statusText(now.status).toLowerCase()} by the shop.`);
  } else if (now.agent_id !== app.session.agent_id) {
    announce("warn", `${name} (${order.customer?.name || ""}) was ${now.agent_id ? "reassigned to another courier" : "taken off your list by the shop"}.`);
  }
  refreshHistory();
}

async function refreshHistory() {
  try {
    const page = await app.api.call("GET", "/orders?limit=100");
    app.history = page.orders.filter((o) => (o.status === "delivered" || o.status === "failed") && o.agent_id === app.session.agent_id
      && isToday(o.status_times?.[o.status] || o.updated_at));
    localStorage.setItem(historyKey(app.session.agent_id), JSON.stringify(app.history));
    render();
  } catch (err) {
    console.warn("orderbus: history not refreshed:", err.message || err);
  }
}

// -- alerts while the app is closed (Web Push, js/push.js) ---------------------------------
function showPush(state, error = "") {
  const box = $("push-offer");
  box.dataset.state = state;
  box.hidden = state === "on" || state === "unsupported";
  $("push-text").textContent = state === "denied"
    ? "Alerts are blocked: allow notifications for this site in the browser's settings."
    : "Get an alert for new orders while the app is closed.";
  $("push-enable").hidden = state === "denied";
  $("push-error").textContent = error;
  $("push-error").hidden = !error;
}

async function refreshPush(current) {
  const state = push.permission();
  if (state !== "granted") return showPush(state);
  try {
    const stored = await push.register(current.api, current.session.agent_id);
    if (current === app) showPush(stored ? "on" : "default");
  } catch (err) {
    if (current === app) showPush("default", err.message || String(err));
  }
}

async function enablePush() {
  const current = app;
  if (!current) return;
  $("push-enable").disabled = true;
  showPush("asking");
  try {
    await push.enable(current.api, current.session.agent_id);
    if (current === app) showPush("on");
  } catch (err) {
    if (current === app) showPush(push.permission() === "denied" ? "denied" : "default", err.message || String(err));
  } finally {
    $("push-enable").disabled = false;
  }
}

// -- session ------------------------------------------------------------------------------
/** The device's broker login: the one kept on the phone, or (none, or `rotate`) a new one. */
async function brokerLogin(rotate = false) {
  const key = brokerKey(app.session.agent_id);
  const stored = JSON.parse(localStorage.getItem(key) || "null");
  if (stored && !rotate) return { login: stored, issuedAt: 0 };
  const answer = await app.api.call("POST", `/agents/${encodeURIComponent(app.session.agent_id)}/mqtt-credentials`);
  localStorage.setItem(key, JSON.stringify(answer.mqtt));
  return { login: answer.mqtt, issuedAt: Date.now() };
}

async function connect(rotate = false) {
  const current = app;
  let issued;
  try {
    issued = await brokerLogin(rotate);
  } catch (err) {
    if (current === app) setTimeout(() => current === app && connect(rotate), 3000);
    return;
  }
  if (current === app) connectWith(issued.login, issued.issuedAt);
}

/**
 * Connect with `login`. A refused login (mqtt.js then stops retrying) is handled as the
 * terminal client does: a stored one was replaced elsewhere, so ask for a new one, once; one
 * issued moments ago (`issuedAt`) is tried again, since the broker reads new logins from its
 * password file a moment later (Mosquitto on SIGHUP); still refused after FRESH_LOGIN_MS, the
 * courier is told and the app keeps trying.
 */
async function connectWith(login, issuedAt) {
  const current = app;
  await app.live?.stop();
  if (current !== app) return;
  const retry = (ms) => setTimeout(() => current === app && connectWith(login, issuedAt), ms);
  app.live = new Live({
    agentId: app.session.agent_id, login, api: app.api,
    onState: (state) => {
      if (current !== app) return; // logged out: the closing link reports on, for no one
      app.connState = state; showConn(state); render(); if (state === "online") app.sender.flush();
    },
    onWorklist,
    onConnected: () => refreshHistory(),
    onGeo: showGeo,
    onRefused: () => {
      if (!issuedAt) return connect(true);
      if (Date.now() - issuedAt < FRESH_LOGIN_MS) return retry(500);
      if (!app.banners.some((b) => b.id === "refused")) {
        app.banners.push({ id: "refused", kind: "conflict", text: "The broker refuses this phone's login: ask the dispatcher." });
      }
      return retry(5000);
    },
  });
  app.live.start();
}

function start(session) {
  unlockAudio();
  const api = new Api(session.token, () => expired());
  const worklist = new Worklist(session.agent_id);
  app = {
    session, api, worklist, entries: [], banners: [], history: JSON.parse(localStorage.getItem(historyKey(session.agent_id)) || "[]"),
    answering: new Set(), declined: new Set(), finishedHere: new Set(), detailId: null, connState: "offline", live: null,
    reasons: Object.keys(REASON_TEXT), proof: cachedSettings(),
  };
  refreshSettings(api).then((s) => { if (app?.api === api) app.proof = s; }).catch(() => {});
  app.sender = new Sender({
    queue: new ActionQueue(), api, agentId: session.agent_id,
    onChange: (entries) => { app.entries = entries; render(); },
    onApplied: (entry) => { if (entry.status !== "picked_up") { app.finishedHere.add(entry.order_id); refreshHistory(); } },
  });
  $("who").textContent = session.user.display_name || session.user.username;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  showConn(navigator.onLine ? "reconnecting" : "offline");
  app.sender.changed();
  app.timers = [setInterval(tickCountdowns, 1000), setInterval(() => app.entries.some((e) => e.state === "pending") && app.sender.flush(), FLUSH_MS)];
  window.addEventListener("online", () => app?.sender.flush());
  render();
  refreshPush(app);
  liveInOneTab(app);
}

/**
 * One live connection per phone: the broker takes a client id's connection from whoever had
 * it, so two tabs of the app would take it from each other for ever. A Web Lock per agent
 * lets one tab connect; another waits (and says so) until that one closes or logs out.
 */
function liveInOneTab(current) {
  if (!navigator.locks) return connect();
  const waiting = { id: "other-tab", kind: "warn", text: "The app is open in another tab or window: this one waits until it closes." };
  return navigator.locks.request(`orderbus.courier.live.${current.session.agent_id}`, { ifAvailable: true }, (lock) => {
    if (lock) return hold(current);
    current.banners.push(waiting);
    render();
    return navigator.locks.request(`orderbus.courier.live.${current.session.agent_id}`, () => {
      current.banners = current.banners.filter((b) => b !== waiting);
      return hold(current);
    });
  });
}

function hold(current) {
  if (current !== app) return null;
  connect();
  render();
  return new Promise((release) => { current.releaseLock = release; });
}

async function stop(offShift) {
  if (!app) return;
  const current = app;
  app = null;
  current.timers.forEach(clearInterval);
  current.releaseLock?.();
  await current.live?.stop(offShift);
}

function showLogin(message) {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-error").hidden = !message;
  const last = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
  if (last?.user?.username) $("login-username").value = last.user.username;
}

async function expired() {
  await stop(false);
  localStorage.removeItem(SESSION_KEY);
  showLogin("Your session ended: log in again. Actions not sent yet are kept.");
}

async function login(event) {
  event.preventDefault();
  unlockAudio();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  $("login-submit").disabled = true;
  try {
    const answer = await request("POST", "/auth/token", { body: { username, password } });
    if (answer.user.role !== "agent" || !answer.user.agent_id) throw new Error(`${username} is not a courier account`);
    const session = { token: answer.access_token, user: answer.user, agent_id: answer.user.agent_id, expires_at: Date.now() + answer.expires_in * 1000 };
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $("login-password").value = "";
    start(session);
  } catch (err) {
    showLogin(err instanceof ApiError ? err.explain() : err.message);
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout() {
  const waiting = app.entries.filter((e) => e.state === "pending").length;
  if (waiting && !window.confirm(`${waiting} action(s) are not sent yet. They stay on this phone; log out anyway?`)) return;
  const api = app.api;
  const agentId = app.session.agent_id;
  await stop(true);
  if (push.permission() === "granted") await push.forget(api, agentId).catch(() => {});
  api.call("DELETE", "/auth/token").catch(() => {});
  localStorage.removeItem(SESSION_KEY);
  showLogin();
}

function boot() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/courier/sw.js", { scope: "/courier/" }).catch((err) => console.warn("orderbus: no service worker:", err.message));
  }
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("back").addEventListener("click", closeDetail);
  $("fail-form").addEventListener("submit", submitFailure);
  $("fail-cancel").addEventListener("click", hideFailForm);
  $("push-enable").addEventListener("click", enablePush);
  $("proof-form").addEventListener("submit", submitProof);
  $("proof-cancel").addEventListener("click", hideProofForm);
  $("mute").addEventListener("click", () => { localStorage.setItem(MUTE_KEY, localStorage.getItem(MUTE_KEY) === "1" ? "0" : "1"); unlockAudio(); showMute(); });
  document.addEventListener("click", unlockAudio, { once: true });
  showMute();
  const session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
  if (session?.token && session.expires_at > Date.now()) start(session);
  else showLogin();
}

boot();
