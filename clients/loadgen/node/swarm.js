// The load generator's client side: many MQTT (mqtt.js) or Socket.IO clients in one
// process, so that every peer of a benchmark is driven by the same event loop.
//
//   node swarm.js < config.json       -> one JSON result on stdout
//   node swarm.js '<json config>'     (the same; a thousand logins exceed an argument's limit)
//
// Modes: "fanout" (B2), "storm" (B4/B6), "e2e" (B1/B3). Times come from
// process.hrtime (CLOCK_MONOTONIC); latency is measured from each message's
// *scheduled* send time (open loop), so a late sender shows up as latency.
"use strict";
const http = require("http");
const mqtt = require("mqtt");
const { io } = require("socket.io-client");

const cfg = JSON.parse(process.argv[2] ?? require("fs").readFileSync(0, "utf8"));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

function summary(values) {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null };
  const s = Float64Array.from(values).sort();
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: q(0.5), p99: q(0.99), max: s[s.length - 1] };
}

function mqttUrl(c) {
  return c.proto === "ws" ? `ws://${c.host}:${c.port}/mqtt` : `mqtt://${c.host}:${c.port}`;
}

// Both brokers use a login's username as its client id: every subscriber has a login of its
// own (cfg.subs[i]); cfg.sub serves a lone subscriber.
function subLogin(i) {
  if (!cfg.subs) return cfg.sub;
  if (i >= cfg.subs.length) throw new Error(`no broker login for subscriber ${i} (${cfg.subs.length} given)`);
  return cfg.subs[i];
}

// `onMessage` is attached before the connection opens: a persistent session's queued messages
// follow the CONNACK at once, before the caller's code after `await` could attach it.
function connectMqtt(c, login, clientId, extra = {}, onMessage = null) {
  // A login may name its own node of a cluster (port, ws_port); else the config's port.
  const port = (c.proto === "ws" ? login.ws_port : login.port) || c.port;
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(mqttUrl({ ...c, port }), {
      clientId, username: login.username, password: login.password, protocolVersion: 4,
      reconnectPeriod: 0, connectTimeout: 60000, keepalive: 120, clean: true, ...extra,
    });
    if (onMessage) client.on("message", onMessage);
    client.once("connect", () => resolve(client));
    client.once("error", reject);
  });
}

// A refused SUBACK (0x80) is not always final: a NATS cluster refuses subscriptions while
// JetStream elects the leaders of its MQTT streams (just started, or a node gone). Tried
// again up to SUB_TRIES times, 0.1 s apart doubling to 2 s; mqtt.js rejects such a SUBACK
// with the packet attached, and anything else (the connection lost) ends the run.
const SUB_TRIES = 8;
async function subscribeGranted(client, topics, opts) {
  for (let attempt = 1, wait = 100; ; attempt += 1, wait = Math.min(wait * 2, 2000)) {
    try {
      const granted = await client.subscribeAsync(topics, opts);
      if (!granted.some((g) => g.qos === 128)) return;
    } catch (err) {
      if (!err || !err.packet) throw err;
    }
    if (attempt >= SUB_TRIES) throw new Error(`subscription refused ${SUB_TRIES} times: ${topics}`);
    await sleep(wait);
  }
}

function connectSio(c) {
  return new Promise((resolve, reject) => {
    const socket = io(`http://${c.host}:${c.port}`, { transports: ["websocket"], forceNew: true, reconnection: false });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function inBatches(count, batch, make) {
  const out = [];
  for (let i = 0; i < count; i += batch) {
    const n = Math.min(batch, count - i);
    out.push(...(await Promise.all(Array.from({ length: n }, (_, k) => make(i + k)))));
  }
  return out;
}

// CPU time in ms: this process's (user + system), and the server's processes' read from
// /proc (Linux): cfg.server_pids is a list of pids or {name: a pid, pids or a pattern}
// (pidsOf). Each thread's schedstat counts nanoseconds; without it, stat's utime + stime in
// ticks of cfg.clk_tck a second. A process gone meanwhile counts as nothing.
const fs = require("fs");
function ownCpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
function pidCpuMs(pid) {
  try {
    let ns = 0;
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      try { ns += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]); }
      catch { /* a thread that just ended */ }
    }
    return ns / 1e6;
  } catch {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / (cfg.clk_tck ?? 100); // utime, stime
    } catch {
      return 0; // the process ended: its CPU is no longer readable
    }
  }
}
// A name's processes: pids, or {cmdline: text}, every process whose command line holds the
// text when read (a database's backends, which its clients open as they need them).
function pidsOf(spec) {
  if (!spec || Array.isArray(spec) || typeof spec !== "object") return [].concat(spec ?? []);
  return fs.readdirSync("/proc").filter((pid) => /^[0-9]+$/.test(pid)).filter((pid) => {
    try { return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(spec.cmdline); }
    catch { return false; }
  });
}
function serverCpuByName() {
  const named = Array.isArray(cfg.server_pids) ? { server: cfg.server_pids } : (cfg.server_pids ?? {});
  const out = {};
  for (const [name, spec] of Object.entries(named)) {
    out[name] = pidsOf(spec).reduce((sum, pid) => sum + pidCpuMs(pid), 0);
  }
  return out;
}
function serverCpuMs() {
  return Object.values(serverCpuByName()).reduce((a, b) => a + b, 0);
}
function cpuSince(before) {
  const now = serverCpuByName();
  return Object.fromEntries(Object.entries(now).map(([name, ms]) => [name, ms - (before[name] ?? 0)]));
}

// Send `count` messages at `rate` per second from t0; send(i, scheduledMs).
async function schedule(count, rate, send) {
  const t0 = nowMs() + 5;
  for (let i = 0; i < count; i++) {
    const at = t0 + (i * 1000) / rate;
    const wait = at - nowMs();
    if (wait > 1) await sleep(wait);
    // Sent early (no sleep under 1 ms, or a timer firing early): latency counts from the
    // actual send, so it is never negative; sent late: from the scheduled time (open loop).
    send(i, Math.min(at, nowMs()));
  }
}

async function fanout() {
  const subsMax = Math.max(...cfg.levels);
  const pad = "x".repeat(Math.max(0, cfg.payload_bytes - 40));
  let phase = null; // {id, level, latencies, seen:Set, received}
  const onMessage = (i, text) => {
    const [id, seq, at] = text.split(" ", 3);
    if (!phase || Number(id) !== phase.id) return;
    const key = `${i}:${seq}`;
    if (phase.seen.has(key)) { phase.duplicates++; return; }
    phase.seen.add(key);
    if (phase.record) phase.latencies.push(nowMs() - Number(at));
    phase.received++;
  };
  const topicOf = (level) => (cfg.proto === "socketio" ? `fanout-${level}` : `orders/fanout-${level}/status`);
  let publish, closeAll;
  if (cfg.proto === "socketio") {
    const subs = await inBatches(subsMax, 100, async (i) => {
      const s = await connectSio(cfg);
      s.on("m", (text) => onMessage(i, text));
      await new Promise((r) => s.emit("join", cfg.levels.filter((l) => i < l).map(topicOf), r));
      return s;
    });
    const pub = await connectSio(cfg);
    publish = (level, text) => pub.emit("publish", topicOf(level), text);
    closeAll = () => [...subs, pub].forEach((s) => s.close());
  } else {
    const subs = await inBatches(subsMax, 50, async (i) => {
      const c = await connectMqtt(cfg, subLogin(i), subLogin(i).username);
      c.on("message", (_t, payload) => onMessage(i, payload.toString()));
      await subscribeGranted(c, cfg.levels.filter((l) => i < l).map(topicOf), { qos: 1 });
      return c;
    });
    const pub = await connectMqtt(cfg, cfg.pub, cfg.pub.username);
    publish = (level, text) => pub.publish(topicOf(level), text, { qos: 1 });
    closeAll = () => [...subs, pub].forEach((c) => c.end(true));
  }
  const results = [];
  let nextId = 1;
  for (const level of cfg.levels) {
    const rate = cfg.rates[String(level)];
    const runPhase = async (seconds, record) => {
      const count = Math.max(1, Math.round(seconds * rate));
      phase = { id: nextId++, level, latencies: [], seen: new Set(), received: 0, duplicates: 0, record };
      const started = nowMs();
      const cpu0 = [serverCpuMs(), ownCpuMs()];
      await schedule(count, rate, (seq, at) => publish(level, `${phase.id} ${seq} ${at} ${pad}`));
      const expected = count * level;
      const deadline = nowMs() + cfg.drain_seconds * 1000;
      while (phase.received < expected && nowMs() < deadline) await sleep(10);
      // Who does the work of a copy: the server's processes and this one (every subscriber's
      // reading, its PUBACK or nothing, the latency's bookkeeping; the publisher's sends).
      const cpu = { server_cpu_ms: serverCpuMs() - cpu0[0], client_cpu_ms: ownCpuMs() - cpu0[1] };
      return { expected, received: phase.received, duplicates: phase.duplicates,
               seconds: (nowMs() - started) / 1000, latency_ms: summary(phase.latencies), ...cpu };
    };
    await runPhase(cfg.warmup_seconds, false);
    for (let rep = 0; rep < cfg.reps; rep++) {
      results.push({ subscribers: level, rate, rep, ...(await runPhase(cfg.seconds, true)) });
    }
  }
  closeAll();
  return { results };
}

// B4/B6: publish retained state, then `clients` connect at once and must each get `expect` messages.
async function storm() {
  const pad = "x".repeat(Math.max(0, cfg.payload_bytes - 60));
  if (cfg.retained) {
    const pub = await connectMqtt(cfg, cfg.pub, cfg.pub.username);
    const jobs = [];
    for (let i = 0; i < cfg.retained.orders; i++) {
      jobs.push(pub.publishAsync(`orders/bench-${i}/status`, JSON.stringify({ order: { id: i, version: 1 }, pad }), { qos: 1, retain: true }));
      if (jobs.length >= 500) await Promise.all(jobs.splice(0));
    }
    for (let i = 0; i < cfg.retained.agents; i++) {
      jobs.push(pub.publishAsync(`agents/bench-${i}/assigned`, JSON.stringify({ version: 1, orders: [], pad }), { qos: 1, retain: true }));
      if (jobs.length >= 500) await Promise.all(jobs.splice(0));
    }
    await Promise.all(jobs);
    pub.end(true);
  }
  const filterOf = (i) => cfg.filter.replace("{i}", String(i));
  const runs = [];
  const persistent = cfg.clean === false;
  let clients = [];
  const once = async (rep) => {
    const counts = new Array(cfg.clients).fill(0);
    const topics = Array.from({ length: cfg.clients }, () => new Set());
    let done = 0;
    const started = nowMs();
    let convergedAt = null;
    const make = async (i) => {
      let finished = false;
      const onMessage = (topic, payload) => {
        counts[i]++;
        topics[i].add(topic);
        // Converged: every expected topic seen, or (an agent's backlog) a worklist holding
        // every expected order.
        const whole = cfg.expect_orders
          ? payload.length > 0 && JSON.parse(payload.toString()).orders.length >= cfg.expect_orders
          : topics[i].size >= cfg.expect;
        if (whole && !finished) {
          finished = true;
          done++;
          if (done === cfg.clients) convergedAt = nowMs();
        }
      };
      const c = await connectMqtt(cfg, subLogin(i), subLogin(i).username, { clean: !persistent }, onMessage);
      await subscribeGranted(c, filterOf(i), { qos: 1 });
      return c;
    };
    clients = await Promise.all(Array.from({ length: cfg.clients }, (_, i) => make(i)));
    const connectedAt = nowMs();
    const deadline = started + cfg.timeout_seconds * 1000;
    while (convergedAt === null && nowMs() < deadline) await sleep(5);
    await sleep(cfg.settle_ms || 300); // late duplicates
    const complete = cfg.expect_orders ? done : topics.filter((t) => t.size >= cfg.expect).length;
    const duplicates = counts.reduce((sum, n, i) => sum + Math.max(0, n - topics[i].size), 0);
    runs.push({ rep, clients: cfg.clients, expect: cfg.expect, complete,
                connected_seconds: (connectedAt - started) / 1000,
                converged_seconds: convergedAt === null ? null : (convergedAt - started) / 1000,
                converged_at_ms: convergedAt, started_at_ms: started,
                messages: counts.reduce((a, b) => a + b, 0), duplicates });
  };
  // First visit creates the sessions (not timed), then everyone drops at once; with `resume`
  // the sessions exist already and hold what was published meanwhile (B5's offline backlog):
  // the timed visit is the first reconnect, which must receive it.
  if (persistent && !cfg.resume) {
    await once(-1);
    runs.pop();
    clients.forEach((c) => c.end(true));
    await sleep(500);
  }
  for (let rep = 0; rep < cfg.reps; rep++) {
    await once(rep);
    if (cfg.hold_seconds && rep === cfg.reps - 1) {
      process.stderr.write("holding\n");
      await sleep(cfg.hold_seconds * 1000);
    }
    clients.forEach((c) => c.end(true));
    await sleep(500);
  }
  return { results: runs };
}

// B1/B3: POST orders (closed loop at concurrency 1, or open loop at a rate); time receipts.
async function e2e() {
  // An idle kept-alive socket is dropped after 20 s, before the API closes it (its keep-alive
  // limit, ORDERBUS_API_KEEPALIVE_SECONDS, is 30 s): a POST sent on a socket the server was
  // closing at that instant would end with no answer (status 0). docs/operations.md.
  const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.sockets || 32, timeout: 20000 });
  const url = new URL(cfg.api);
  const pending = new Map(); // note -> {at, resolve}
  const received = (note) => {
    const p = pending.get(note);
    if (p && p.receivedAt === undefined) { p.receivedAt = nowMs(); if (p.wake) p.wake(); }
    else if (p) p.duplicates++;
  };
  let close = () => {};
  if (cfg.sub && cfg.sub.kind === "mqtt") {
    const c = await connectMqtt(cfg.sub, cfg.sub, cfg.sub.username);
    c.on("message", (_t, payload) => {
      if (payload.length) received(JSON.parse(payload.toString()).order.notes);
    });
    await subscribeGranted(c, cfg.sub.topic, { qos: 1 });
    close = () => c.end(true);
  } else if (cfg.sub && cfg.sub.kind === "socketio") {
    const s = await connectSio(cfg.sub);
    s.on(cfg.sub.event, (order) => received(order.notes));
    await new Promise((r) => s.emit("join", [cfg.sub.room], r));
    close = () => s.close();
  }
  const post = (note) => new Promise((resolve) => {
    const body = JSON.stringify({ ...cfg.order, notes: note });
    const req = http.request({ agent, method: "POST", hostname: url.hostname, port: url.port, path: url.pathname,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), ...cfg.headers } },
      (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
    req.on("error", () => resolve(0));
    req.end(body);
  });
  let run = 0;
  const phaseRun = async (rate, count, record) => {
    run++;
    const entries = [];
    const statuses = {};
    const track = async (seq, at) => {
      const note = `bench ${process.pid} ${run} ${seq}`;
      const entry = { at, duplicates: 0 };
      pending.set(note, entry);
      entries.push(entry);
      const arrived = cfg.sub ? new Promise((r) => { entry.wake = r; }) : null;
      const status = await post(note);
      entry.answeredAt = nowMs();
      entry.ok = status >= 200 && status < 300;
      statuses[status] = (statuses[status] || 0) + 1;
      // Wrapped: an async function returning the promise itself would wait for the receipt,
      // and a receipt that never comes (a lost message) would hang the run instead of
      // being counted as lost after drain_seconds below.
      return { arrived };
    };
    const started = nowMs();
    const cpu0 = [serverCpuByName(), ownCpuMs()];
    if (rate === null) {
      for (let seq = 0; seq < count; seq++) {
        const { arrived } = await track(seq, nowMs());
        if (arrived) await Promise.race([arrived, sleep(cfg.drain_seconds * 1000)]);
      }
    } else {
      const inflight = [];
      await schedule(count, rate, (seq, at) => inflight.push(track(seq, at)));
      await Promise.all(inflight);
    }
    const lastAnswer = Math.max(...entries.map((e) => e.answeredAt));
    const deadline = nowMs() + cfg.drain_seconds * 1000;
    while (cfg.sub && entries.some((e) => e.ok && e.receivedAt === undefined) && nowMs() < deadline) await sleep(10);
    const ok = entries.filter((e) => e.ok);
    const got = ok.filter((e) => e.receivedAt !== undefined);
    const lastReceipt = got.length ? Math.max(...got.map((e) => e.receivedAt)) : lastAnswer;
    const result = {
      rate, count, statuses, ok: ok.length,
      seconds: ((cfg.sub ? lastReceipt : lastAnswer) - started) / 1000,
      response_ms: summary(entries.map((e) => e.answeredAt - e.at)),
    };
    result.achieved_per_second = ok.length / result.seconds;
    if (cfg.server_pids) result.server_cpu_ms = cpuSince(cpu0[0]);
    result.client_cpu_ms = ownCpuMs() - cpu0[1];
    if (cfg.sub) {
      result.received = got.length;
      result.lost = ok.length - got.length;
      result.duplicates = entries.reduce((s, e) => s + e.duplicates, 0);
      result.receipt_ms = summary(got.map((e) => e.receivedAt - e.at));
    }
    return record ? result : null;
  };
  const results = [];
  for (const p of cfg.phases) {
    if (p.warmup) await phaseRun(p.rate, p.warmup, false);
    for (let rep = 0; rep < cfg.reps; rep++) results.push({ rep, ...(await phaseRun(p.rate, p.count, true)) });
  }
  close();
  agent.destroy();
  return { results };
}

const modes = { fanout, storm, e2e };
modes[cfg.mode]()
  .then((out) => { process.stdout.write(JSON.stringify(out) + "\n"); process.exit(0); })
  .catch((err) => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
