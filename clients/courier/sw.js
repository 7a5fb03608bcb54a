// The courier app's service worker: keeps the app shell (this app's files, mqtt.js and the
// dashboard modules it imports) in a cache, so the app opens with no network at all.
//
// Shell files are fetched network first (a new deploy shows on the next load) and fall back
// to the cache when the network fails or is slower than SLOW_MS; each good answer refreshes
// the cache. The API and the broker are never cached: data comes live, and actions taken
// offline wait in the page's IndexedDB queue (js/queue.js), not here.
//
// It also shows the service's Web Push messages (new assignment, new offer) while the app
// is closed or in the background, and a tap on one opens or focuses the app.

const CACHE = "orderbus-courier-v5";
const SLOW_MS = 3000;
const SHELL = [
  "/courier/",
  "/courier/app.css",
  "/courier/manifest.webmanifest",
  "/courier/icon.svg",
  "/courier/js/main.js",
  "/courier/js/live.js",
  "/courier/js/push.js",
  "/courier/js/geo.js",
  "/courier/js/queue.js",
  "/courier/js/proof.js",
  "/courier/js/sender.js",
  "/courier/js/view.js",
  "/courier/js/worklist.js",
  "/courier/vendor/mqtt.esm.js",
  "/admin/js/api.js",
  "/admin/js/cluster.js",
  "/admin/js/contract.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("orderbus-courier-") && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

function shellKey(request) {
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || request.method !== "GET") return null;
  const path = url.pathname === "/courier/index.html" ? "/courier/" : url.pathname;
  return SHELL.includes(path) ? path : null;
}

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  const fromNetwork = fetch(request).then((response) => {
    if (response.ok) cache.put(key, response.clone());
    return response;
  });
  const slow = new Promise((resolve) => setTimeout(resolve, SLOW_MS, null));
  try {
    const response = await Promise.race([fromNetwork, slow]);
    if (response) return response;
  } catch {
    // no network: the cached copy below
  }
  const cached = await cache.match(key);
  return cached || fromNetwork;
}

self.addEventListener("fetch", (event) => {
  const key = shellKey(event.request);
  if (key) event.respondWith(networkFirst(event.request, key));
});

// -- Web Push (js/push.js subscribes; the service pushes while the app is not connected) --
self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  const title = String(data.title || "orderbus: new work").slice(0, 120);
  event.waitUntil(self.registration.showNotification(title, {
    body: String(data.body || "").slice(0, 300),
    tag: data.order_id ? `order-${data.order_id}` : "orderbus",
    renotify: true,
    requireInteraction: data.kind === "offer", // an offer waits for an answer
    icon: "/courier/icon.svg",
    vibrate: [200, 100, 200],
    data: { order_id: data.order_id || null, kind: data.kind || null },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((w) => new URL(w.url).pathname.startsWith("/courier/"));
    if (open) return open.focus();
    return self.clients.openWindow("/courier/");
  })());
});
