// The shop's live feed: MQTT over WebSocket with the customer's own read-only broker
// login, subscribed to the retained `catalog` and `customers/<userId>/orders` topics.
//
// Clean session, subscribed again on every connect, and after each connect the page
// reloads the catalog and the orders over REST, so nothing published while it was away
// is missed. The indicator is the truth: "online" only once that resync is done;
// "offline" while the browser says it has no network (the connection is closed then,
// and opened afresh when the network is back).

import mqtt from "/admin/vendor/mqtt.esm.js"; // the dashboard's copy (make admin-deps)
import { clusterServers, subscribeGranted } from "/admin/js/cluster.js";

const decoder = new TextDecoder();
export const CATALOG_TOPIC = "catalog";
const SUBSCRIBE_TRIES = 8; // about 22 s of refusals
export const ordersTopic = (userId) => `customers/${userId}/orders`;

export class Live {
  constructor({ api, userId, handlers }) {
    this.api = api;
    this.userId = userId;
    this.h = handlers; // onState(state), onCatalog(body), onOrders(snapshot), onResync({catalog, orders}), onRefused()
    this.login = null;
    this.client = null;
    this.generation = 0;
    this.onOffline = () => this.pause();
    this.onOnline = () => this.resume();
  }

  async start() {
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    if (!navigator.onLine) return this.h.onState("offline");
    await this.connect();
  }

  async connect() {
    this.h.onState("reconnecting");
    const generation = ++this.generation;
    // A broker login of this page's own (both brokers use its username as the client id).
    for (let wait = 1000; !this.login; wait = Math.min(wait * 2, 10000)) {
      try {
        this.login = await this.api.brokerLogin();
      } catch (err) {
        if (err.status === 401 || generation !== this.generation) return; // the session ended / stopped
        await new Promise((resolve) => setTimeout(resolve, wait));
        if (generation !== this.generation) return;
      }
    }
    if (generation !== this.generation || this.client) return; // paused meanwhile, or connected again
    const client = mqtt.connect(this.login.url, {
      ...clusterServers(this.login.urls),
      clientId: this.login.client_id || this.login.username,
      username: this.login.username,
      password: this.login.password,
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      timerVariant: "native", // the worker variant needs a blob: worker, which the page's CSP forbids
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      resubscribe: false, // subscribed on every connect, then a resync
    });
    this.client = client;
    client.on("connect", () => this.onConnect(client));
    client.on("message", (topic, payload) => this.onMessage(topic, payload));
    const down = () => {
      if (this.client !== client) return;
      this.generation += 1;
      this.h.onState(navigator.onLine ? "reconnecting" : "offline");
    };
    client.on("close", down);
    client.on("offline", down);
    client.on("error", (err) => {
      // CONNACK 4 (bad user name or password) / 5 (not authorised): the login ended.
      if (err && (err.code === 4 || err.code === 5)) this.h.onRefused();
    });
  }

  /** The network is gone: close the connection rather than pretend; say so. */
  pause() {
    this.close();
    this.h.onState("offline");
  }

  close() {
    this.generation += 1;
    const client = this.client;
    this.client = null;
    client?.end(true);
  }

  resume() {
    if (this.client) return;
    this.connect();
  }

  /** Connect again with a new broker login (the previous one was refused). */
  relogin() {
    this.close();
    this.login = null;
    if (navigator.onLine) this.connect();
    else this.h.onState("offline");
  }

  stop() {
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    this.close();
  }

  async onConnect(client) {
    const generation = ++this.generation;
    this.h.onState("syncing");
    const topics = { [CATALOG_TOPIC]: { qos: 1 }, [ordersTopic(this.userId)]: { qos: 1 } };
    // A refusal is tried again (a cluster electing its streams' leaders after losing a
    // node refuses for a while: cluster.js); refused all along, the login lacks the topics.
    const subscribed = subscribeGranted(client, topics, {
      current: () => generation === this.generation && this.client === client,
      tries: SUBSCRIBE_TRIES,
    });
    for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
      try {
        const [catalog, orders] = await Promise.all([this.api.catalog(), this.api.orders(), subscribed]);
        if (generation !== this.generation) return;
        this.h.onResync({ catalog, orders });
        break;
      } catch (err) {
        if (generation !== this.generation || err.status === 401) return;
        if (err.refused) return this.h.onRefused(); // a login without these topics: get another
        await new Promise((resolve) => setTimeout(resolve, wait));
        if (generation !== this.generation) return;
      }
    }
    this.h.onState("online");
  }

  onMessage(topic, payload) {
    if (!payload || payload.length === 0) return;
    let body;
    try {
      body = JSON.parse(decoder.decode(payload));
    } catch {
      console.warn("orderbus: not JSON on", topic);
      return;
    }
    if (topic === CATALOG_TOPIC) this.h.onCatalog(body);
    else if (topic === ordersTopic(this.userId)) this.h.onOrders(body);
  }
}
