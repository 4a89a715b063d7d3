// Follows one generation job's event stream and hands each event on exactly once.
//
// EventSource reconnects by itself after a dropped connection and sends
// Last-Event-ID, so the gateway replays only what was missed. Events are still
// checked by sequence, and script text by its offset in Unicode code points, so a
// replayed event or an overlapping delta can never repeat text. When the browser
// gives up (an HTTP error on reconnect, or 204 after the last event), or the gateway
// reports its link to the core broken (a `failed` without a sequence), the job's
// state decides: reopen after the last sequence seen, or finish. Asking for the
// job also renews the eventsUrl's job token, which may have expired meanwhile.

import { send } from "./api.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const EVENT_NAMES = ["queued", "stage", "progress", "delta", "failover", ...TERMINAL];
const ENDED_STATES = new Set([
  "GENERATION_STATE_SUCCEEDED",
  "GENERATION_STATE_FAILED",
  "GENERATION_STATE_CANCELLED",
]);
const MAX_BACKOFF_MS = 15000;

/** Code points of `text` (JS strings count UTF-16 units; offsets count code points). */
export function codePoints(text) {
  return Array.from(text);
}

export class GenerationFollower {
  /**
   * @param {string} generation "generations/{id}"
   * @param {string} eventsUrl where the 201 answer said to follow the job
   * @param {object} handlers onEvent(kind, event), onText(text), onConnection(state), onEnd(kind, event)
   */
  constructor(generation, eventsUrl, handlers) {
    this.generation = generation;
    this.eventsUrl = eventsUrl;
    this.handlers = handlers;
    this.lastSequence = 0;
    this.length = 0; // script length so far, in code points
    this.gaps = 0;
    this.ended = false;
    this.source = null;
    this.retryTimer = null;
    this.failures = 0; // reopen attempts since the last new event
    this.onOnline = () => this.reopenSoon(0);
  }

  start() {
    window.addEventListener("online", this.onOnline);
    this.open(this.eventsUrl);
  }

  /** Stop following; the job itself keeps running (it is detached). */
  close() {
    this.ended = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  open(url) {
    if (this.source) this.source.close();
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => this.handlers.onConnection("open"));
    source.addEventListener("error", () => this.lost(source));
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (message) => {
        if (source === this.source) this.receive(name, message); // not an older stream's
      });
    }
  }

  receive(name, message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const sequence = Number(event.sequence || 0);
    if (sequence > 0) {
      if (sequence <= this.lastSequence) return; // already seen before a reconnect
      this.lastSequence = sequence;
      this.failures = 0; // progress: the next reopen, if any, is at once
    } else if (name === "failed") {
      // The gateway's own `failed` (no sequence): its link to the core broke, not the job,
      // which may still run on another core. Ask the job what became of it.
      this.source.close();
      this.source = null;
      this.handlers.onConnection("reconnecting");
      this.reopenSoon(this.backoff());
      return;
    }
    if (name === "delta") this.text(event.textDelta || {});
    else this.handlers.onEvent(name, event);
    if (TERMINAL.has(name)) this.finish(name, event);
  }

  text(delta) {
    const offset = Number(delta.offset || 0);
    let chars = codePoints(delta.text || "");
    if (offset > this.length) {
      // Text is missing before this delta; the saved episode fills it in at the end.
      this.gaps += 1;
    } else if (offset < this.length) {
      chars = chars.slice(this.length - offset); // already shown: keep only what is new
    }
    if (chars.length === 0) return;
    this.length += chars.length;
    this.handlers.onText(chars.join(""));
  }

  lost(source) {
    if (this.ended || source !== this.source) return;
    if (source.readyState === EventSource.CONNECTING) {
      this.handlers.onConnection(navigator.onLine ? "reconnecting" : "offline");
      return;
    }
    // The browser gave up: an HTTP error, or 204 (nothing more to send). Ask the job.
    source.close();
    this.source = null;
    this.reopenSoon(this.backoff());
  }

  /** 0 for the first retry, then 1 s, 2 s, 4 s … up to 15 s, so a lasting error is not hammered. */
  backoff() {
    const delay = this.failures === 0 ? 0 : Math.min(1000 * 2 ** (this.failures - 1), MAX_BACKOFF_MS);
    this.failures += 1;
    return delay;
  }

  reopenSoon(delayMs) {
    if (this.ended || this.source) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.check(), delayMs);
  }

  async check() {
    if (this.ended || this.source) return;
    let job;
    try {
      const response = await send("GET", `/v1/${this.generation}`);
      // Asked with the API key, the job comes with a fresh events link: the first
      // one's job token may have expired while the connection was down.
      const fresh = eventsLink(response.headers.get("Link"));
      if (fresh) this.eventsUrl = fresh;
      job = await response.json();
    } catch (error) {
      this.handlers.onConnection(error.status === 0 && !navigator.onLine ? "offline" : "retrying", error);
      // 401 opens the sign-in (api.js) and retrying continues once a key is given.
      if (error.status === 403 || error.status === 404) {
        this.finish("failed", { failed: { status: { message: error.describe() } } });
        return;
      }
      const delay = this.backoff();
      this.reopenSoon(error.retryAfter ? Math.max(error.retryAfter * 1000, delay) : delay);
      return;
    }
    if (ENDED_STATES.has(job.state) && job.lastSequence && Number(job.lastSequence) <= this.lastSequence) {
      // Everything was seen but the terminal event: end from the job's own record.
      this.finish(...terminalOf(job));
      return;
    }
    const url = new URL(this.eventsUrl, location.href);
    url.searchParams.set("lastEventId", String(this.lastSequence));
    this.handlers.onConnection("reconnecting");
    this.open(url.pathname + url.search);
  }

  finish(name, event) {
    if (this.ended) return;
    this.close();
    this.handlers.onEnd(name, event);
  }
}

/** The target of `rel="events"` in a Link header, or null. */
export function eventsLink(header) {
  const match = /<([^>]*)>\s*;\s*rel="?events"?/.exec(header || "");
  return match ? match[1] : null;
}

function terminalOf(job) {
  if (job.state === "GENERATION_STATE_SUCCEEDED") {
    return ["completed", { completed: { episode: { name: job.episode } } }];
  }
  if (job.state === "GENERATION_STATE_CANCELLED") {
    return ["cancelled", { cancelled: { reason: "cancelled" } }];
  }
  return ["failed", { failed: { status: job.error || { message: "The job failed." } } }];
}
