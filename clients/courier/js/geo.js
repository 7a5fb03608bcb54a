// Sharing the courier's position while the app is on shift (issue 19).
//
// navigator.geolocation.watchPosition gives fixes; one is published (QoS 0, not retained)
// on the agent's own agents/<id>/location/report when the phone moved MIN_MOVE_M or more
// since the last one sent (but not sooner than MIN_GAP_MS after it), or MAX_GAP_MS passed;
// a fix that waits is sent by the timer when its turn comes. Nothing is sent while the
// broker link is down (the relay would only take a stale fix later). Stopping (log out,
// another tab takes over) clears the watch; the service clears the position when the
// device's presence goes offline.

import { agentLocationReport } from "/admin/js/contract.js";

export const MIN_GAP_MS = 3000;
export const MAX_GAP_MS = 10000;
export const MIN_MOVE_M = 50;

function metres(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad, dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(h)));
}

function report(position) {
  const c = position.coords;
  const body = { lat: c.latitude, lon: c.longitude, tst: Math.floor(position.timestamp / 1000) };
  if (Number.isFinite(c.accuracy)) body.acc = Math.round(c.accuracy);
  if (Number.isFinite(c.speed) && c.speed >= 0) body.speed = c.speed;
  if (Number.isFinite(c.heading) && c.heading >= 0 && c.heading <= 360) body.heading = c.heading;
  return body;
}

export class LocationSharer {
  /** publish(topic, text) -> true when handed to a connected client; onState({state, sentAt}). */
  constructor({ agentId, publish, onState }) {
    Object.assign(this, { agentId, publish, onState });
    this.watch = null;
    this.timer = null;
    this.waiting = null; // the newest fix not sent yet
    this.last = null; // {lat, lon, at (ms), tst}
  }

  start() {
    if (!("geolocation" in navigator)) return this.onState({ state: "unavailable" });
    this.onState({ state: "waiting" });
    this.watch = navigator.geolocation.watchPosition(
      (position) => { this.waiting = report(position); this.flush(); },
      (err) => this.onState({ state: err.code === err.PERMISSION_DENIED ? "denied" : "unavailable" }),
      { enableHighAccuracy: true, maximumAge: 5000, timeout: 30000 },
    );
    this.timer = setInterval(() => this.flush(), 1000);
  }

  flush() {
    const fix = this.waiting;
    if (!fix) return;
    const now = Date.now();
    if (this.last) {
      const since = now - this.last.at;
      const moved = metres(this.last, fix) >= MIN_MOVE_M;
      if (fix.tst <= this.last.tst || since < MIN_GAP_MS || (!moved && since < MAX_GAP_MS)) return;
    }
    if (!this.publish(agentLocationReport(this.agentId), JSON.stringify(fix))) return;
    this.waiting = null;
    this.last = { lat: fix.lat, lon: fix.lon, at: now, tst: fix.tst };
    this.onState({ state: "sharing", sentAt: new Date(now) });
  }

  stop() {
    if (this.watch !== null) navigator.geolocation.clearWatch(this.watch);
    clearInterval(this.timer);
    this.watch = null;
    this.waiting = null;
    this.onState({ state: "off" });
  }
}
