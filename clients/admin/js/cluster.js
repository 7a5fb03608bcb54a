// What the pages need to live on a broker cluster; shared by the dashboard, the shop
// (/shop/) and the courier app (/courier/), which import it from /admin/js/cluster.js.

// A cluster hands out every node's URL (login.urls / ws_urls): mqtt.js moves to the next
// node on each reconnect (its `servers` option). One URL: none needed.
export function clusterServers(urls) {
  if (!Array.isArray(urls) || urls.length < 2) return {};
  return {
    servers: urls.map((url) => {
      const parsed = new URL(url);
      return { host: parsed.hostname, port: Number(parsed.port), protocol: parsed.protocol.slice(0, -1) };
    }),
  };
}

const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 5000;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The topics a SUBACK's return codes (`granted`, in the order subscribed) refuse; null without codes. */
function refusedTopics(topics, granted) {
  if (!Array.isArray(granted)) return null;
  const names = Object.keys(topics);
  if (granted.length !== names.length) return names;
  return names.filter((_, i) => (granted[i] & 0x80) !== 0);
}

/**
 * Subscribe to `topics` ({topic: {qos}}) on the connected `client` until the broker grants
 * every one. A refused SUBACK (0x80) is not always final: after a node dies, NATS refuses
 * subscriptions for a while as JetStream elects its streams' new leaders. So a refusal (or
 * a failed SUBSCRIBE) is tried again after FIRST_RETRY_MS, doubling up to LAST_RETRY_MS, for
 * at most `tries` attempts (then it throws an error with `refused` set, naming the topics).
 * `current()` says whether this connection still matters: once it does not (the link went
 * down, or the page moved on) the attempts end with an error with `stale` set, since the
 * next connect subscribes afresh. Each refusal is logged (console) and told to
 * `onRefused(topics, attempt)`.
 */
export async function subscribeGranted(client, topics, { current, onRefused = () => {}, tries = Infinity }) {
  const live = () => current() && client.connected;
  for (let attempt = 1, wait = FIRST_RETRY_MS; ; attempt += 1, wait = Math.min(wait * 2, LAST_RETRY_MS)) {
    if (!live()) throw Object.assign(new Error("disconnected before subscribing"), { stale: true });
    let refused;
    let failure = "refused";
    try {
      refused = (await client.subscribeAsync(topics)).filter((g) => g.qos === 128).map((g) => g.topic);
    } catch (err) {
      if (!live()) throw Object.assign(err instanceof Error ? err : new Error(String(err)), { stale: true });
      // mqtt.js rejects a SUBACK holding a failure code (0x80), the SUBACK in `packet`;
      // anything else (no SUBACK at all, the broker busy) is tried again the same way.
      refused = refusedTopics(topics, err?.packet?.granted);
      if (!refused) failure = `failed (${err?.message || err})`;
    }
    if (refused && !refused.length) return;
    const named = refused || Object.keys(topics);
    console.warn(`orderbus: subscription ${failure} (attempt ${attempt}): ${named.join(", ")}`);
    onRefused(named, attempt);
    if (attempt >= tries) throw Object.assign(new Error(`subscription refused: ${named.join(", ")}`), { refused: true });
    await pause(wait);
  }
}
