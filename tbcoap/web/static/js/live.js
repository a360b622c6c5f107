// Live subscriptions over ThingsBoard's WebSocket API (/api/ws): one socket per tab while signed
// in, the key sent in its first message (authCmd), never in the URL. Pages subscribe with
// ThingsBoard's commands and get each update as it is stored; a dropped socket is opened again
// (1 s, 2 s, 4 s ... up to 30 s apart) and every subscription is sent again, so each gets its
// current values first once more. While the socket is down, `live.up` is false and the pages
// poll as before (the fallback).

const MAX_BACKOFF_MS = 30000;

class Live {
  constructor() {
    this.key = null;
    this.socket = null;
    this.up = false;
    this.nextId = 1;
    this.subs = new Map(); // cmdId -> {cmd, onUpdate}
    this.backoff = 1000;
    this.timer = null;
    this.listeners = new Set();
  }

  /** Open the socket with this key (after sign-in). */
  start(key) {
    this.stop();
    this.key = key;
    this.connect();
  }

  /** Close it and forget every subscription (sign-out). */
  stop() {
    this.key = null;
    clearTimeout(this.timer);
    this.subs.clear();
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    this.setUp(false);
  }

  connect() {
    if (!this.key) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/api/ws`);
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      const cmds = [...this.subs.entries()].map(([cmdId, sub]) => ({ ...sub.cmd, cmdId }));
      socket.send(JSON.stringify({ authCmd: { cmdId: 0, token: this.key }, cmds }));
      this.backoff = 1000;
      this.setUp(true);
    });
    socket.addEventListener("message", (event) => {
      let update;
      try {
        update = JSON.parse(event.data);
      } catch {
        return;
      }
      const sub = this.subs.get(update.subscriptionId ?? update.cmdId);
      if (sub) sub.onUpdate(update);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.setUp(false);
      this.retry();
    });
  }

  retry() {
    if (!this.key) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
  }

  setUp(up) {
    if (this.up === up) return;
    this.up = up;
    for (const listener of this.listeners) listener(up);
  }

  /** Tell `listener(up)` when the socket goes up or down; returns a function that stops telling. */
  watch(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Subscribe with a ThingsBoard command ({type: "TIMESERIES" | "ATTRIBUTES", entityType,
   * entityId, keys?, scope?}); `onUpdate(update)` gets each update (the current values first).
   * Returns the cmdId, for `unsubscribe`.
   */
  subscribe(cmd, onUpdate) {
    const cmdId = this.nextId++;
    this.subs.set(cmdId, { cmd, onUpdate });
    this.send({ ...cmd, cmdId });
    return cmdId;
  }

  unsubscribe(cmdId) {
    const sub = this.subs.get(cmdId);
    if (!sub) return;
    this.subs.delete(cmdId);
    this.send({ ...sub.cmd, cmdId, unsubscribe: true });
  }

  send(cmd) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN && this.up) {
      this.socket.send(JSON.stringify({ cmds: [cmd] }));
    } // else: sent with every other subscription once the socket is open
  }
}

export const live = new Live();

/**
 * A subscription that ends with the page (`life`): `onData(data)` gets each update's data
 * ({key: [[ts, "value"]]}); an update with an error ends nothing here (the page keeps polling),
 * `onError(update)` hears of it.
 */
export function follow(life, cmd, onData, onError = () => {}) {
  const cmdId = live.subscribe(cmd, (update) => {
    if (!life.alive) return;
    if (update.errorCode) onError(update);
    else if (update.data) onData(update.data);
  });
  life.onEnd(() => live.unsubscribe(cmdId));
  return cmdId;
}

/** Run `work` at most once per `ms` (the last call wins), for redraws driven by updates. */
export function throttle(ms, work) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) {
      again = true;
      return;
    }
    work();
    timer = setTimeout(function done() {
      timer = null;
      if (again) {
        again = false;
        work();
        timer = setTimeout(done, ms);
      }
    }, ms);
  };
}
