// A short chime for new orders, made with WebAudio (no sound file), with a remembered mute switch.

const MUTE_KEY = "orderbus.admin.muted";

export class Sound {
  constructor() {
    this.muted = localStorage.getItem(MUTE_KEY) === "1";
    this.context = null;
    this.onChange = () => {};
  }

  /** Call from a user gesture (a click): browsers only let a page start audio after one. */
  unlock() {
    if (this.context || !window.AudioContext) return;
    this.context = new AudioContext();
  }

  setMuted(muted) {
    this.muted = muted;
    localStorage.setItem(MUTE_KEY, muted ? "1" : "0");
    if (!muted) this.unlock();
    this.onChange(muted);
  }

  play() {
    if (this.muted || !this.context) return;
    const ctx = this.context;
    if (ctx.state === "suspended") ctx.resume();
    const start = ctx.currentTime;
    [880, 1320].forEach((frequency, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = frequency;
      const t = start + i * 0.12;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.2, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.25);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.3);
    });
    this.played = (this.played || 0) + 1;
    document.documentElement.dataset.chimes = String(this.played);
  }
}
