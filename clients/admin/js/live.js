// The live feed: MQTT over WebSocket (mqtt.js), and the resync that follows every (re)connect.
//
// On each connect the page subscribes to orders/# and agents/#, then reloads the order
// list and the agents over REST; retained messages and REST answers are applied alike,
// newest version wins. Until that resync is done nothing counts as news (no toast, no
// sound): state merely synced is not news. The retained `catalog` topic (the catalog
// editor's and the phone-order form's live catalog) is subscribed apart: a broker that
// refuses it leaves the order board working.

import mqtt from "../vendor/mqtt.esm.js";
import { clusterServers, subscribeGranted } from "./cluster.js";
import { AGENTS_ALL, CATALOG, ORDERS_ALL, agentFromLocationTopic, classify } from "./contract.js";

const FILTERS = [ORDERS_ALL, AGENTS_ALL];
const CATALOG_TRIES = 6; // about 12 s of refusals: then the login lacks the topic (the board works without it)
const decoder = new TextDecoder();

export class Live {
  constructor({ login, api, handlers }) {
    this.login = login; // this page's own broker login: {url, client_id, username, password}
    this.api = api;
    this.h = handlers; // onState(state, detail), onOrder(order, meta), onWorklist, onPresence, onCatalog, onResync(data), onRefused()
    this.generation = 0;
    this.syncing = true;
    this.client = null;
    this.everSynced = false;
  }

  start() {
    this.h.onState("connecting");
    this.client = mqtt.connect(this.login.url, {
      ...clusterServers(this.login.urls),
      // Both brokers use the username as the client id, whatever a client sends: one login
      // per page, or two pages would take each other's connection for ever.
      clientId: this.login.client_id || this.login.username,
      username: this.login.username,
      password: this.login.password,
      protocolVersion: 4,
      clean: true,
      keepalive: 60, // native timers: a background tab's are throttled to once a minute
      timerVariant: "native", // the worker variant needs a blob: worker, which the page's CSP forbids
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      resubscribe: false, // subscribed on every connect, followed by a resync
    });
    this.client.on("connect", () => this.onConnect());
    this.client.on("message", (topic, payload) => this.onMessage(topic, payload));
    this.client.on("close", () => this.onDown());
    this.client.on("offline", () => this.onDown());
    this.client.on("error", (err) => {
      // CONNACK 4 (bad user name or password) / 5 (not authorised): the login ended.
      if (err && (err.code === 4 || err.code === 5)) this.h.onRefused();
    });
  }

  stop() {
    this.generation += 1;
    this.client?.end(true);
    this.client = null;
  }

  /** Connect again with another broker login (the previous one was refused). */
  relogin(login) {
    this.stop();
    this.login = login;
    this.start();
  }

  onDown() {
    if (!this.client) return;
    this.generation += 1;
    this.syncing = true;
    this.h.onState("reconnecting");
  }

  async onConnect() {
    const generation = ++this.generation;
    this.syncing = true;
    this.h.onState("resyncing");
    // Refused (a cluster electing its streams' leaders after losing a node): tried again
    // until granted, the board saying so meanwhile (cluster.js).
    const client = this.client;
    const current = () => generation === this.generation && this.client === client;
    const subscribed = subscribeGranted(client, Object.fromEntries(FILTERS.map((topic) => [topic, { qos: 1 }])), {
      current,
      onRefused: (topics) => current() && this.h.onState("resyncing", `subscription refused: ${topics.join(", ")}; trying again`),
    });
    subscribeGranted(client, { [CATALOG]: { qos: 1 } }, { current, tries: CATALOG_TRIES })
      .catch((err) => err.refused && console.warn("orderbus: the broker refused the catalog topic"));
    for (;;) {
      try {
        const [orders, agents] = await Promise.all([this.api.allOrders(), this.api.agents(), subscribed]);
        if (generation !== this.generation) return;
        this.h.onResync({ orders, agents, first: !this.everSynced });
        break;
      } catch (err) {
        if (generation !== this.generation) return;
        this.h.onState("resyncing", err.message || String(err));
        await new Promise((resolve) => setTimeout(resolve, 2000));
        if (generation !== this.generation) return;
      }
    }
    this.everSynced = true;
    this.syncing = false;
    this.h.onState("connected");
  }

  onMessage(topic, payload) {
    const locationOf = agentFromLocationTopic(topic); // agents/<id>/location: the dispatcher's map
    if (locationOf !== null) return this.onLocation(locationOf, payload);
    if (!payload || payload.length === 0) return; // a finished order's cleared retained state
    let body;
    try {
      body = JSON.parse(decoder.decode(payload));
    } catch {
      console.warn("orderbus: not JSON on", topic);
      return;
    }
    if (topic === CATALOG) {
      this.h.onCatalog?.(body);
      return;
    }
    const meta = { live: !this.syncing, firstSync: !this.everSynced, event: body.event, reason: body.reason, delay: body.delay };
    const { kind } = classify(topic, body);
    if (kind === "order") this.h.onOrder(body.order, meta);
    else if (kind === "worklist" && body.event === "agent.worklist") this.h.onWorklist(body, meta);
    else if (kind === "presence" && body.agent_id) this.h.onPresence(body, meta);
  }

  /** An agent's position; an empty payload (off shift, offline) clears it: onLocation(id, null). */
  onLocation(agentId, payload) {
    let body = null;
    if (payload && payload.length) {
      try {
        body = JSON.parse(decoder.decode(payload));
      } catch {
        return console.warn("orderbus: not JSON on", agentId, "location");
      }
      if (body?.event !== "agent.location") return;
    }
    this.h.onLocation?.(agentId, body);
  }
}
