// Load shapes and what every run checks. A run tags its messages; each payload carries its index and the time
// it was scheduled, so latency is taken from the schedule (open loop: a slow server cannot slow the sender
// down and hide its own queueing). Every run checks delivery and order at every client: each message reached
// every client exactly once (as `message`, or `ack` at its sender) and seqs only grew.
import * as hdr from "hdr-histogram-js";
import { now } from "./clients.mjs";
import { round, sleep } from "./proc.mjs";

/** A latency histogram in microseconds, up to an hour, 3 significant digits. */
export const histogram = () =>
  hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });

/** p50/p99/p99.9/max of a microsecond histogram, in milliseconds. */
export function percentiles(/** @type {hdr.Histogram} */ h) {
  const ms = (/** @type {number} */ us) => round(us / 1000, 2);
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}

/**
 * The first index of `sorted` (ascending) whose value is `value` or more; `sorted.length` when none is: when
 * a stream of growing lastSeqs first showed a seq.
 * @param {number[]} sorted
 * @param {number} value
 */
export function firstAtLeast(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (/** @type {number} */ (sorted[mid]) >= value) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

let runs = 0;
const PAD = "x".repeat(48);

/** One measured run over a set of clients: its tag, its payloads, and the delivery and order checks. */
export class Run {
  /**
   * @param {import("./clients.mjs").Client[]} clients
   * @param {number} capacity the most messages this run may send
   * @param {string} [tag] the run's tag, when its messages were sent before its clients existed
   */
  constructor(clients, capacity, tag = Run.newTag()) {
    this.tag = tag;
    this.clients = clients;
    this.capacity = capacity;
    this.sent = 0;
    /** Deliveries to clients other than the sender. */
    this.latency = histogram();
    /** From the scheduled time to the sender's ack (stored, then acked). */
    this.ackLatency = histogram();
    /** How late the generator sent, against the schedule. */
    this.lag = histogram();
    /** Ack times (ms), for throughput over a window. */
    this.ackTimes = new Float64Array(capacity);
    this.acks = 0;
    this.duplicates = 0;
    this.errorFrames = 0;
    /** @type {any[]} */
    this.errorSamples = [];
    /** @type {((client: import("./clients.mjs").Client, index: number, frame: any, at: number) => void) | null} */
    this.onAck = null;
    this.seen = clients.map(() => new Uint8Array(capacity));
    this.unique = new Int32Array(clients.length);
    this.slot = new Map(clients.map((c, i) => [c, i]));
    this.orderBefore = clients.map((c) => c.orderViolations);
    /** When each client had all `expected` messages (ms), for runs whose messages are all known up front. */
    this.completedAt = new Float64Array(clients.length);
    this.expected = 0;
    for (const c of clients) c.run = this;
  }

  static newTag() {
    return `r${process.pid.toString(36)}${(runs++).toString(36)}`;
  }

  /** The content of message `index`: the run's tag, the index and the time it was scheduled for. */
  content(/** @type {number} */ index, /** @type {number} */ scheduled) {
    return `${this.tag}|${index}|${scheduled.toFixed(3)}|${PAD}`;
  }

  /**
   * Sends message `index` from `client`, stamped with the time it was scheduled for.
   * @param {import("./clients.mjs").Client} client
   * @param {number} index
   * @param {number} scheduled
   */
  send(client, index, scheduled) {
    client.send({ type: "send", localId: `${this.tag}-${index}`, content: this.content(index, scheduled) });
    this.sent = Math.max(this.sent, index + 1);
    this.lag.recordValue(Math.max(0, Math.round((now() - scheduled) * 1000)));
  }

  /**
   * @param {import("./clients.mjs").Client} client
   * @param {any} frame
   * @param {number} at
   */
  onFrame(client, frame, at) {
    if (frame.type === "error") {
      this.errorFrames++;
      if (this.errorSamples.length < 5) this.errorSamples.push(frame);
      return;
    }
    if (frame.type !== "message" && frame.type !== "ack") return;
    const content = /** @type {string} */ (frame.message.content);
    if (!content.startsWith(`${this.tag}|`)) return;
    const [, indexText, scheduledText] = content.split("|");
    const index = Number(indexText);
    const slot = this.slot.get(client);
    if (slot === undefined || !(index >= 0 && index < this.capacity)) return;
    const seen = /** @type {Uint8Array} */ (this.seen[slot]);
    if (seen[index]) {
      this.duplicates++;
      return;
    }
    seen[index] = 1;
    this.unique[slot] = (this.unique[slot] ?? 0) + 1;
    if (this.expected > 0 && this.unique[slot] === this.expected) this.completedAt[slot] = at;
    const us = Math.max(0, Math.round((at - Number(scheduledText)) * 1000));
    if (frame.type === "message") {
      this.latency.recordValue(us);
    } else {
      this.ackLatency.recordValue(us);
      if (this.acks < this.capacity) this.ackTimes[this.acks++] = at;
      this.onAck?.(client, index, frame, at);
    }
  }

  /** True once every client has every message sent so far. */
  complete() {
    for (let i = 0; i < this.clients.length; i++) if ((this.unique[i] ?? 0) < this.sent) return false;
    return true;
  }

  /** Waits until every client has every message sent, or the timeout. */
  async settle(timeoutMs = 15_000) {
    const deadline = now() + timeoutMs;
    while (!this.complete() && now() < deadline) await sleep(20);
    return this.complete();
  }

  /** Acks per second between two times. */
  ackRate(/** @type {number} */ from, /** @type {number} */ to) {
    let n = 0;
    for (let i = 0; i < this.acks; i++) {
      const t = /** @type {number} */ (this.ackTimes[i]);
      if (t >= from && t < to) n++;
    }
    return n / ((to - from) / 1000);
  }

  /** The checks, and detaches from the clients. */
  finish() {
    for (const c of this.clients) if (c.run === this) c.run = null;
    let delivered = 0;
    for (const u of this.unique) delivered += u;
    const expected = this.sent * this.clients.length;
    const orderViolations = this.clients.reduce((sum, c, i) => sum + c.orderViolations - (this.orderBefore[i] ?? 0), 0);
    const checks = {
      sent: this.sent,
      deliveredPercent: expected === 0 ? 100 : round((100 * delivered) / expected, 3),
      duplicates: this.duplicates,
      orderViolations,
      errorFrames: this.errorFrames,
    };
    return {
      ...checks,
      ok: checks.deliveredPercent === 100 && checks.duplicates === 0 && orderViolations === 0 && this.errorFrames === 0,
      errorSamples: this.errorSamples,
    };
  }
}

/**
 * Open loop over several conversations: message k of the schedule goes to conversation (offset + k) mod n at
 * start + k / rate, sent by that conversation's first client, numbered within its run, so that the
 * conversations' sends interleave evenly rather than in bursts.
 * @param {Run[]} runs one per conversation
 * @param {{ rate: number, count: number, offset: number }} options
 * @returns {Promise<number>} when the first message was scheduled, once the last one has been sent
 */
export function spreadOver(runs, { rate, count, offset }) {
  const n = runs.length;
  const interval = 1000 / rate;
  const start = now() + 5;
  let k = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const t = now();
      while (k < count && start + k * interval <= t) {
        const run = /** @type {Run} */ (runs[(offset + k) % n]);
        run.send(/** @type {import("./clients.mjs").Client} */ (run.clients[0]), run.sent, start + k * interval);
        k++;
      }
      if (k >= count || now() - start > (count / rate) * 1000 + 60_000) {
        resolve(start);
        return;
      }
      setTimeout(tick, Math.max(0, start + k * interval - now() - 0.5));
    };
    tick();
  });
}

/**
 * Open loop: message i is scheduled at start + i / rate, sent by the next sender in turn, whatever the server
 * is doing. Resolves when the last one has been sent.
 * @param {Run} run
 * @param {{ senders: import("./clients.mjs").Client[], rate: number, count: number, first?: number }} options
 */
export function openLoop(run, { senders, rate, count, first = 0 }) {
  const interval = 1000 / rate;
  const start = now() + 5;
  let i = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const t = now();
      while (i < count && start + i * interval <= t) {
        const sender = /** @type {import("./clients.mjs").Client} */ (senders[(first + i) % senders.length]);
        run.send(sender, first + i, start + i * interval);
        i++;
      }
      if (i >= count) {
        resolve(undefined);
        return;
      }
      setTimeout(tick, Math.max(0, start + i * interval - now() - 0.5));
    };
    tick();
  });
}

/**
 * Saturation: each sender keeps `window` sends in flight (the next goes when one is acked) for `durationMs`,
 * or until the run's capacity. Returns when sending stopped.
 * @param {Run} run
 * @param {{ senders: import("./clients.mjs").Client[], window: number, durationMs: number }} options
 */
export function saturate(run, { senders, window, durationMs }) {
  const end = now() + durationMs;
  // Continues the run's numbering, so that a run can saturate several times.
  let next = run.sent;
  const inFlight = new Map(senders.map((s) => [s, 0]));
  return new Promise((resolve) => {
    const sendFrom = (/** @type {import("./clients.mjs").Client} */ sender) => {
      if (now() >= end || next >= run.capacity) return false;
      run.send(sender, next++, now());
      inFlight.set(sender, (inFlight.get(sender) ?? 0) + 1);
      return true;
    };
    run.onAck = (client) => {
      const left = (inFlight.get(client) ?? 1) - 1;
      inFlight.set(client, left);
      if (!sendFrom(client)) {
        let total = 0;
        for (const n of inFlight.values()) total += n;
        if (total === 0) finish();
      }
    };
    const timer = setTimeout(() => finish(), durationMs + 30_000);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      run.onAck = null;
      resolve(undefined);
    };
    for (const sender of senders) for (let k = 0; k < window; k++) sendFrom(sender);
  });
}
