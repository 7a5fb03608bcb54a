// The courier's live link: MQTT over WebSocket (mqtt.js) with a persistent session.
//
// The device connects with its own broker login (username = client id = agent id, which
// both brokers enforce) and clean session off, subscribes to agents/<id>/assigned at QoS 1,
// so worklists published while the phone was away wait in its session and arrive on return.
// Like the terminal client (clients/agent) it keeps a retained last will "offline" on
// agents/<id>/presence, says "online" there on every connect and every HEARTBEAT_MS (the
// relay's dispatch counts an agent silent for 90 s as offline), and after each (re)connect
// reads its worklist over REST as well. The indicator is truthful: "online" only while the
// broker link is up, "offline" while the phone reports no network, "reconnecting" between.

import mqtt from "../vendor/mqtt.esm.js";
import { clusterServers, subscribeGranted } from "/admin/js/cluster.js";
import { agentAssigned, agentPresence } from "/admin/js/contract.js";
import { LocationSharer } from "./geo.js";

const HEARTBEAT_MS = 25000;
const decoder = new TextDecoder();

function presence(agentId, state) {
  return JSON.stringify({ agent_id: agentId, state, at: new Date().toISOString() });
}

export class Live {
  constructor({ agentId, login, api, onState, onWorklist, onRefused, onConnected, onGeo }) {
    Object.assign(this, { agentId, login, api, onState, onWorklist, onRefused, onConnected });
    // Its position, while on shift: QoS 0, only while the broker link is up (geo.js).
    this.geo = new LocationSharer({
      agentId,
      publish: (topic, text) => Boolean(this.client?.connected && this.client.publish(topic, text, { qos: 0 })),
      onState: onGeo || (() => {}),
    });
    this.client = null;
    this.link = 0; // one more on every connect and every loss: which connection is current
    this.state = null;
    this.timer = null;
    this.goneOffline = () => {
      this.setState("offline");
      this.client?.stream?.destroy(); // the phone says no network: do not trust the old socket
    };
    this.backOnline = () => { this.setState("reconnecting"); this.client?.reconnect(); };
  }

  setState(state) {
    if (!navigator.onLine && state !== "online") state = "offline";
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  start() {
    const topic = agentPresence(this.agentId);
    this.setState("reconnecting");
    this.client = mqtt.connect(this.login.ws_url, {
      ...clusterServers(this.login.ws_urls),
      clientId: this.login.client_id,
      username: this.login.username,
      password: this.login.password,
      protocolVersion: 4,
      clean: false,
      keepalive: 30,
      timerVariant: "native", // the worker variant needs a blob: worker, which the CSP forbids
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      resubscribe: false, // subscribed on every connect below
      will: { topic, payload: presence(this.agentId, "offline"), qos: 1, retain: true },
    });
    this.client.on("connect", () => this.connected());
    this.client.on("message", (t, payload) => this.message(t, payload));
    const down = () => { this.link += 1; this.setState("reconnecting"); };
    this.client.on("close", down);
    this.client.on("offline", down);
    this.client.on("error", (err) => {
      // CONNACK 4 (bad user name or password) / 5 (not authorised): this device's login is gone.
      if (err && (err.code === 4 || err.code === 5)) this.onRefused();
    });
    window.addEventListener("offline", this.goneOffline);
    window.addEventListener("online", this.backOnline);
    this.timer = setInterval(() => this.sayOnline(), HEARTBEAT_MS);
    this.geo.start();
  }

  sayOnline() {
    if (this.client?.connected) {
      this.client.publish(agentPresence(this.agentId), presence(this.agentId, "online"), { qos: 1, retain: true });
    }
  }

  async connected() {
    const client = this.client;
    const link = ++this.link;
    const current = () => this.client === client && this.link === link;
    this.sayOnline();
    // "Online" only once subscribed: a refusal (a cluster electing its streams' leaders after
    // losing a node) is tried again until granted (cluster.js), the app saying "Reconnecting…".
    try {
      await subscribeGranted(client, { [agentAssigned(this.agentId)]: { qos: 1 } }, { current });
    } catch {
      return; // the link went down meanwhile: the next connect subscribes again
    }
    try {
      this.onWorklist(await this.api.call("GET", `/agents/${encodeURIComponent(this.agentId)}/orders`));
    } catch (err) {
      console.warn("orderbus: resync after connect failed:", err.message || err);
    }
    if (current() && client.connected) {
      this.setState("online");
      this.onConnected();
    }
  }

  message(topic, payload) {
    if (topic !== agentAssigned(this.agentId) || !payload || payload.length === 0) return;
    try {
      this.onWorklist(JSON.parse(decoder.decode(payload)));
    } catch {
      console.warn("orderbus: not JSON on", topic);
    }
  }

  /** Stop; `offShift` (logging out) also says "offline" now rather than by the will. */
  async stop(offShift = false) {
    clearInterval(this.timer);
    this.geo.stop();
    window.removeEventListener("offline", this.goneOffline);
    window.removeEventListener("online", this.backOnline);
    const client = this.client;
    this.client = null;
    if (!client) return;
    if (offShift && client.connected) {
      await client.publishAsync(agentPresence(this.agentId), presence(this.agentId, "offline"), { qos: 1, retain: true })
        .catch(() => {});
    }
    client.end(true);
  }
}
