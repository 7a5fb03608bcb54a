// The dispatcher's map: couriers' live positions (agents/<id>/location, retained), the
// delivery locations of active orders, and the trail of each delivery under way.
//
// Leaflet comes from npm (served at /admin/vendor/), the tiles from the server's
// ORDERBUS_MAP_TILE_URL (given by /admin/config.json). Without tiles (none set, or the
// tile server unreachable) the markers still show, on a plain background with a scale.
// Markers are Leaflet divIcons built as DOM elements: no HTML strings, no inline styles.

import * as L from "../vendor/leaflet.esm.js";
import { el, orderLabel } from "./format.js";

const FINISHED = new Set(["delivered", "cancelled", "rejected", "failed"]);
const TRAIL_MAX = 500; // points kept per trail, as the trail endpoint returns at most
const AGE_TICK_MS = 5000; // "seen 12 s ago" moves on this often

/** How long ago a unix time was, short: "5 s", "3 min", "2 h". */
export function seenAgo(tst, now = Date.now()) {
  if (!Number.isFinite(tst)) return "";
  const seconds = Math.max(0, Math.round(now / 1000 - tst));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

const isPosition = (lat, lon) =>
  Number.isFinite(lat) && Number.isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180;

export class DispatchMap {
  constructor({ container, status, store, api, config, onSelectOrder, onSelectAgent }) {
    this.store = store;
    this.api = api;
    this.status = status; // a line under the map: counts, and whether tiles load
    this.onSelectOrder = onSelectOrder;
    this.onSelectAgent = onSelectAgent;
    this.couriers = new Map(); // agent id -> {marker, element, location}
    this.pins = new Map(); // order id -> {marker, element}
    this.trails = new Map(); // order id -> {line, loaded}
    this.selectedOrder = null;
    this.selectedAgent = null;
    this.userMoved = false; // once the dispatcher pans or zooms, the map stops fitting itself
    this.tileErrors = 0;
    this.tilesLoaded = 0;
    container.dataset.tiles = "none";
    this.map = L.map(container, { center: [20, 0], zoom: 2, worldCopyJump: true });
    L.control.scale({ imperial: false }).addTo(this.map);
    const tiles = config?.tile_url;
    if (tiles) {
      container.dataset.tiles = "loading";
      L.tileLayer(tiles, { attribution: config.attribution || "", maxZoom: 19 })
        .on("tileerror", () => { this.tileErrors += 1; this.renderStatus(); })
        .on("tileload", () => { this.tilesLoaded += 1; this.renderStatus(); })
        .addTo(this.map);
    }
    for (const type of ["pointerdown", "wheel", "keydown"]) {
      container.addEventListener(type, () => { this.userMoved = true; }, { passive: true });
    }
    this.container = container;
    this.ageTimer = setInterval(() => this.refreshAges(), AGE_TICK_MS);
    this.renderStatus();
  }

  stop() {
    clearInterval(this.ageTimer);
    clearTimeout(this.fitTimer);
    this.map.remove();
  }

  /** The container was hidden or resized: let Leaflet measure it again. */
  refresh() {
    this.map.invalidateSize();
    if (this.container.offsetWidth) this.fitSoon(); // fitted while hidden, the view was wrong
  }

  // -- couriers ---------------------------------------------------------------------
  /** agents/<id>/location: a position, or null when the agent stopped sharing it. */
  setLocation(agentId, location) {
    const known = this.couriers.get(agentId);
    if (!location || !isPosition(location.lat, location.lon)) {
      if (location) return; // not a position: ignored, whatever reached the page
      if (known) {
        known.marker.remove();
        this.couriers.delete(agentId);
        this.renderStatus();
      }
      return;
    }
    if (known?.location && Number.isFinite(known.location.tst) && location.tst < known.location.tst) return;
    let courier = known;
    if (!courier) {
      const element = el("div", "courier-marker");
      element.dataset.agent = agentId;
      element.append(el("span", "courier-dot"), el("span", "courier-label"));
      element.lastChild.append(el("strong", "courier-name"), el("span", "courier-meta"));
      const marker = L.marker([location.lat, location.lon], {
        icon: L.divIcon({ className: "map-marker", html: element, iconSize: null }),
        keyboard: true,
        riseOnHover: true,
      }).on("click", () => this.onSelectAgent?.(agentId)).addTo(this.map);
      courier = { marker, element };
      this.couriers.set(agentId, courier);
      this.fitSoon();
    } else {
      courier.marker.setLatLng([location.lat, location.lon]);
    }
    courier.location = location;
    courier.element.dataset.lat = String(location.lat);
    courier.element.dataset.lon = String(location.lon);
    this.renderCourier(agentId);
    this.extendTrails(agentId, location);
    this.renderStatus();
  }

  renderCourier(agentId, now = Date.now()) {
    const courier = this.couriers.get(agentId);
    if (!courier) return;
    const agent = this.store.agents.get(agentId);
    const { location, element } = courier;
    const state = location.stale ? "stale" : agent?.presence?.state === "offline" ? "offline" : "online";
    const name = this.store.agentName(agentId);
    const active = agent?.active_orders ?? (location.order_ids || []).length;
    element.dataset.state = state;
    element.classList.toggle("selected", agentId === this.selectedAgent);
    element.querySelector(".courier-name").textContent = name;
    element.querySelector(".courier-meta").textContent =
      `${state} · ${active} active · ${seenAgo(location.tst, now)}`;
    element.setAttribute("aria-label", `Courier ${name}, ${state}, ${active} active orders, seen ${seenAgo(location.tst, now)}`);
    courier.marker.setZIndexOffset(agentId === this.selectedAgent ? 900 : state === "online" ? 500 : 0);
  }

  /** Names, presence or worklists changed: rewrite the couriers' labels. */
  refreshAgents() {
    for (const id of this.couriers.keys()) this.renderCourier(id);
  }

  refreshAges() {
    const now = Date.now();
    for (const id of this.couriers.keys()) this.renderCourier(id, now);
  }

  selectAgent(agentId) {
    this.selectedAgent = agentId;
    this.refreshAgents();
  }

  // -- orders -------------------------------------------------------------------------
  /** An order changed (or arrived): its pin while active with a location, its trail while picked up. */
  updateOrder(order) {
    const where = order.delivery_location;
    const active = !FINISHED.has(order.status);
    const pin = this.pins.get(order.id);
    if (active && where && isPosition(where.lat, where.lon)) {
      if (!pin) {
        const element = el("div", "order-pin");
        element.dataset.order = order.id;
        element.append(el("span", "order-pin-label"));
        const marker = L.marker([where.lat, where.lon], {
          icon: L.divIcon({ className: "map-marker", html: element, iconSize: null }),
          keyboard: true,
          zIndexOffset: 1000, // over the couriers' labels
        }).on("click", () => this.onSelectOrder?.(order.id)).addTo(this.map);
        this.pins.set(order.id, { marker, element });
        this.fitSoon();
      } else {
        pin.marker.setLatLng([where.lat, where.lon]);
      }
      const { element } = this.pins.get(order.id);
      element.dataset.status = order.status;
      element.firstChild.textContent = orderLabel(order);
      element.setAttribute("aria-label", `Order ${orderLabel(order)}, ${order.status.replace("_", " ")}, ${order.customer?.address || ""}`);
      element.classList.toggle("selected", order.id === this.selectedOrder);
    } else if (pin) {
      pin.marker.remove();
      this.pins.delete(order.id);
    }
    if (order.status === "picked_up" && order.agent_id) this.ensureTrail(order);
    else this.dropTrail(order.id);
  }

  /** The board selected an order: highlight its pin and trail, and bring it into view. */
  selectOrder(orderId) {
    const before = this.pins.get(this.selectedOrder);
    before?.element.classList.remove("selected");
    before?.marker.setZIndexOffset(1000);
    this.trails.get(this.selectedOrder)?.line.setStyle({ weight: 4, opacity: 0.6 });
    this.selectedOrder = orderId;
    const pin = this.pins.get(orderId);
    if (pin) {
      pin.element.classList.add("selected");
      pin.marker.setZIndexOffset(2000);
      if (this.container.offsetParent && !this.map.getBounds().contains(pin.marker.getLatLng())) {
        this.map.panTo(pin.marker.getLatLng());
      }
    }
    this.trails.get(orderId)?.line.setStyle({ weight: 6, opacity: 0.9 }).bringToFront();
    this.container.dataset.selected = orderId || "";
  }

  // -- trails -------------------------------------------------------------------------
  ensureTrail(order) {
    if (this.trails.has(order.id)) return;
    const line = L.polyline([], { className: "trail", weight: 4, opacity: 0.6, interactive: false }).addTo(this.map);
    const trail = { line, agentId: order.agent_id, loaded: false };
    this.trails.set(order.id, trail);
    // The route so far, from GET /orders/<id>/trail; live positions append to it meanwhile.
    this.api.trail(order.id).then((body) => {
      if (this.trails.get(order.id) !== trail || !Array.isArray(body?.points)) return;
      const earlier = body.points.filter((p) => isPosition(p.lat, p.lon)).map((p) => ({ ...p }));
      const last = earlier.length ? earlier[earlier.length - 1].tst : -Infinity;
      const live = (trail.points || []).filter((p) => p.tst > last);
      this.setTrail(order.id, [...earlier, ...live]);
    }).catch(() => { /* no trail yet (or no endpoint): live positions only */ }).finally(() => {
      trail.loaded = true;
    });
    const courier = this.couriers.get(order.agent_id)?.location;
    if (courier) this.setTrail(order.id, [{ lat: courier.lat, lon: courier.lon, tst: courier.tst }]);
  }

  setTrail(orderId, points) {
    const trail = this.trails.get(orderId);
    if (!trail) return;
    trail.points = points.slice(-TRAIL_MAX);
    trail.line.setLatLngs(trail.points.map((p) => [p.lat, p.lon]));
    trail.line.getElement?.()?.setAttribute("data-order", orderId);
    trail.line.getElement?.()?.setAttribute("data-points", String(trail.points.length));
  }

  extendTrails(agentId, location) {
    const carried = new Set(location.order_ids || []);
    for (const [orderId, trail] of this.trails) {
      if (trail.agentId !== agentId && !carried.has(orderId)) continue;
      const points = trail.points || [];
      const last = points[points.length - 1];
      if (last && (last.tst >= location.tst || (last.lat === location.lat && last.lon === location.lon))) continue;
      this.setTrail(orderId, [...points, { lat: location.lat, lon: location.lon, tst: location.tst }]);
    }
  }

  dropTrail(orderId) {
    const trail = this.trails.get(orderId);
    if (!trail) return;
    trail.line.remove();
    this.trails.delete(orderId);
  }

  // -- view ---------------------------------------------------------------------------
  /** Fit the map to every marker, until the dispatcher moves it by hand. */
  fitSoon() {
    clearTimeout(this.fitTimer);
    this.fitTimer = setTimeout(() => {
      if (this.userMoved || !this.container.offsetWidth) return; // hidden: fitted when shown
      const points = [...this.couriers.values(), ...this.pins.values()].map((m) => m.marker.getLatLng());
      if (!points.length) return;
      this.map.fitBounds(L.latLngBounds(points), { padding: [40, 40], maxZoom: 15, animate: false });
      this.container.dataset.fits = String(Number(this.container.dataset.fits || 0) + 1);
    }, 100);
  }

  renderStatus() {
    const couriers = this.couriers.size;
    const orders = this.pins.size;
    let tiles = "";
    if (this.container.dataset.tiles !== "none") {
      const failing = this.tileErrors > 0 && this.tilesLoaded === 0;
      this.container.dataset.tiles = failing ? "failing" : this.tilesLoaded ? "loaded" : "loading";
      if (failing) tiles = " · map tiles unavailable: markers only";
    }
    this.status.textContent = `${couriers} courier${couriers === 1 ? "" : "s"} sharing a position · ${orders} order${orders === 1 ? "" : "s"} to deliver${tiles}`;
  }
}
