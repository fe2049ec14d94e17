// Hostile load: what ~10 % of sockets behaving badly costs the users who chat normally in the same
// conversations. The product's own limits apply here (a server of its own, from the run's bundle, with the
// product's [vars]: the run's server has the send limiter raised), so the floods meet the real buckets.
//
// Normal users: `normalPerConversation` sockets (one user each) in each of `conversations` conversations, each
// sending `ratePerUser` msg/s, open loop (one Run and one openLoop per conversation, its senders in turn), and a
// read marker every `readEveryMs`. Every normal message must be acked once and reach every other normal member
// exactly once, in order; no normal socket may be refused a frame or closed (the scenario's checks).
//
// Hostile users: `hostilePerConversation` more members of each conversation, one socket each, looping through,
// as fast as the socket takes them (at most `window` frames in flight: a frame is in flight until a reply, an
// error or an ack, comes back, or for `creditMs` when none is due): `garbagePerCycle` frames of non-JSON
// garbage, unknown types and bad shapes (each answered with an error frame); one frame over 32 KiB (the server
// closes with 1009); one binary frame (1003); a flood of typing changes and read markers until the server
// closes with 4429; a flood of sends until 4429. After each close the socket comes back after
// `reconnectPauseMs`. Every flood is bounded (frames and seconds) and the phase ends it.
//
// Phases alternate, `baseline` (normal users only) and `hostile` (the same with the hostile sockets), each of
// `phaseMs` of scheduled sends, so that the machine's noise falls on both kinds; each kind's figures are the
// median of its phases, and the ratios are hostile ÷ baseline of those medians (and pair by pair).
import WebSocket from "ws";
import { Client, closeAll, connectAll, now, productTargets, users } from "../lib/clients.mjs";
import { histogram, openLoop, percentiles, Run } from "../lib/load.mjs";
import { cpuMeter, round, sleep, untilQuiet } from "../lib/proc.mjs";
import { startProduct } from "../lib/servers.mjs";
import { mergeChecks, ratio } from "./realtime.mjs";

/**
 * @typedef {object} HostileSizes
 * @property {number} conversations
 * @property {number} normalPerConversation
 * @property {number} hostilePerConversation
 * @property {number} ratePerUser msg/s of each normal user
 * @property {number} readEveryMs a read marker from each normal user this often
 * @property {number} warmupMs normal users only, not counted
 * @property {number} phaseMs scheduled sends of each phase
 * @property {("baseline" | "hostile")[]} phases in this order
 * @property {number} rampMs hostile sockets start this long before a hostile phase's sends
 * @property {number} window hostile frames in flight per socket
 * @property {number} creditMs a frame that gets no reply stops counting as in flight after this long
 * @property {number} garbagePerCycle
 * @property {number} reconnectPauseMs
 */

/** A frame over the product's 32 KiB (MAX_FRAME_BYTES). */
const OVERSIZED = `{"type":"send","localId":"big","content":"${"x".repeat(40_000)}"}`;
/** Frames the server must refuse with an error frame: not JSON, not an object, unknown types, bad shapes. */
const GARBAGE = [
  "not json at all",
  '{"type":',
  "\u0000\u0001\u0002\u00ff garbage",
  "[1,2,3]",
  "null",
  "42",
  '"a string"',
  JSON.stringify({ type: "explode" }),
  JSON.stringify({ type: "admin", grant: "everything" }),
  JSON.stringify({ kind: "send", content: "no type" }),
  JSON.stringify({ type: "send", localId: "bad id!", content: "x" }),
  JSON.stringify({ type: "send", localId: "empty", content: "" }),
  JSON.stringify({ type: "send", localId: "long", content: "x".repeat(4001) }),
  JSON.stringify({ type: "send", localId: "extra", content: "x", admin: true }),
  JSON.stringify({ type: "read", seq: -1 }),
  JSON.stringify({ type: "read", seq: "all" }),
  JSON.stringify({ type: "typing", typing: "yes" }),
];
/** The most frames of one flood, and its longest time: the server should close long before either. */
const FLOOD_MAX_FRAMES = 3000;
const FLOOD_MAX_MS = 10_000;
/** How long a hostile socket waits for the close the server owes it, or for its garbage's error frames. */
const CLOSE_WAIT_MS = 5000;
const CONNECT_WAIT_MS = 10_000;

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {HostileSizes} sizes
 */
export async function hostileLoad(ctx, sizes) {
  const { conversations, normalPerConversation, hostilePerConversation, ratePerUser, phaseMs } = sizes;
  const startedAt = now();
  // The product's [vars] as they are: the send limiter is the product's, not the run's raised one.
  const server = await startProduct({ vars: {}, bundleFrom: ctx.server.bundleDir });
  /** @type {Client[]} */
  let normal = [];
  /** @type {Record<string, any>} */
  const result = {
    conversations,
    normalSockets: conversations * normalPerConversation,
    hostileSockets: conversations * hostilePerConversation,
    ratePerUser,
    totalRate: conversations * normalPerConversation * ratePerUser,
    readEveryMs: sizes.readEveryMs,
    phaseMs,
    phaseOrder: sizes.phases,
    window: sizes.window,
    creditMs: sizes.creditMs,
    reconnectPauseMs: sizes.reconnectPauseMs,
    note: "a server of its own with the product's [vars] (send bucket 20 + 5/s, read/typing bucket 30 + 10/s, 4429 after 50 refusals in a row); timings are reported, not asserted",
  };
  try {
    result.serverStartSeconds = round((now() - startedAt) / 1000, 1);
    result.serverQuietAfterSeconds = await untilQuiet([server.pid]);
    const product = productTargets(server);
    const target = product.ours;
    /** @type {{ room: string, normal: string[], hostile: string[] }[]} */
    const rooms = [];
    for (let c = 0; c < conversations; c++) {
      const people = users(`hn${c}-${ctx.runId}`, normalPerConversation);
      const bad = users(`hx${c}-${ctx.runId}`, hostilePerConversation);
      rooms.push({ room: await target.room([...people, ...bad]), normal: people, hostile: bad });
    }
    normal = await connectAll(
      target,
      rooms.flatMap((r) => r.normal.map((user) => ({ room: r.room, user }))),
    );
    const byRoom = rooms.map((_, c) => normal.slice(c * normalPerConversation, (c + 1) * normalPerConversation));

    /** All Runs' checks, the warm-up's too: every normal message counts. */
    const finished = /** @type {ReturnType<Run["finish"]>[]} */ ([]);
    const normalErrors = /** @type {Record<string, number>} */ ({});

    /** One phase of normal traffic: a Run per conversation, open loop; resolves once settled. */
    const normalTraffic = async (/** @type {number} */ ms) => {
      const perRoom = normalPerConversation * ratePerUser;
      const count = Math.max(1, Math.round((perRoom * ms) / 1000));
      const runs = byRoom.map((clients) => new CountingRun(clients, count, normalErrors));
      const reads = readMarkers(normal, sizes.readEveryMs);
      const t0 = now();
      await Promise.all(runs.map((run) => openLoop(run, { senders: run.clients, rate: perRoom, count })));
      const sendSeconds = (now() - t0) / 1000;
      const settled = (await Promise.all(runs.map((run) => run.settle(20_000)))).every(Boolean);
      reads.stop();
      return { runs, settled, sendSeconds, readsSent: reads.sent() };
    };

    const warm = await normalTraffic(sizes.warmupMs);
    for (const run of warm.runs) finished.push(run.finish());

    /** @type {any[]} */
    const phases = [];
    for (const [i, kind] of sizes.phases.entries()) {
      const stats = kind === "hostile" ? newHostileStats() : null;
      const attackers =
        kind === "hostile" && stats
          ? rooms.flatMap((r) => r.hostile.map((user) => hostileSocket(target, r.room, user, sizes, stats)))
          : [];
      if (attackers.length > 0) await sleep(sizes.rampMs);
      const framesBefore = tally(normal);
      const closedBefore = normal.filter((c) => c.closeCode !== 0).length;
      const meter = cpuMeter([server.pid]);
      const hostileSentBefore = stats ? sumValues(stats.sent) : 0;
      const traffic = await normalTraffic(phaseMs);
      const cpu = meter();
      const hostileSent = stats ? sumValues(stats.sent) - hostileSentBefore : 0;
      for (const a of attackers) a.stop();
      await Promise.all(attackers.map((a) => a.done));
      const framesAfter = tally(normal);
      const checks = mergeChecks(traffic.runs.map((run) => run.finish()));
      finished.push(checks);
      const ack = mergeHistograms(traffic.runs.map((run) => run.ackLatency));
      const delivery = mergeHistograms(traffic.runs.map((run) => run.latency));
      const lag = mergeHistograms(traffic.runs.map((run) => run.lag));
      /** @type {Record<string, number>} */
      const framesPerSecond = {};
      for (const [type, n] of Object.entries(framesAfter))
        framesPerSecond[type] = round((n - (framesBefore[type] ?? 0)) / cpu.wallSeconds, 1);
      const phase = {
        phase: i + 1,
        kind,
        ackLatencyMs: percentiles(ack),
        deliveryLatencyMs: percentiles(delivery),
        generatorLagMs: percentiles(lag),
        settled: traffic.settled,
        readMarkersSent: traffic.readsSent,
        normalFramesReceivedPerSecond: framesPerSecond,
        normalClosed: normal.filter((c) => c.closeCode !== 0).length - closedBefore,
        cpu,
        checks,
        hostile: stats
          ? { ...summarizeHostile(stats), framesPerSecondInWindow: round(hostileSent / cpu.wallSeconds, 0) }
          : null,
      };
      phases.push(phase);
      ctx.log(
        `  phase ${i + 1} ${kind}: ack p50 ${phase.ackLatencyMs.p50} p99 ${phase.ackLatencyMs.p99}, delivery p50 ${phase.deliveryLatencyMs.p50} p99 ${phase.deliveryLatencyMs.p99} ms, server CPU ${cpu.serverCpuShare}${phase.hostile ? `, hostile ${phase.hostile.framesPerSecondInWindow} frames/s, closes ${JSON.stringify(phase.hostile.closes)}` : ""}`,
      );
      // The server drains what the hostile sockets left before the next phase.
      await sleep(1000);
    }
    result.phases = phases;
    for (const kind of /** @type {const} */ (["baseline", "hostile"])) {
      const of = phases.filter((p) => p.kind === kind);
      result[kind] = {
        phases: of.length,
        ackLatencyMs: {
          p50: median(of.map((p) => p.ackLatencyMs.p50)),
          p99: median(of.map((p) => p.ackLatencyMs.p99)),
        },
        deliveryLatencyMs: {
          p50: median(of.map((p) => p.deliveryLatencyMs.p50)),
          p99: median(of.map((p) => p.deliveryLatencyMs.p99)),
        },
        generatorLagMsP99: median(of.map((p) => p.generatorLagMs.p99)),
        serverCpuShare: median(of.map((p) => p.cpu.serverCpuShare)),
        generatorCpuShare: median(of.map((p) => p.cpu.generatorCpuShare)),
      };
    }
    const b = result.baseline;
    const h = result.hostile;
    result.ratios = {
      ackP50: ratio(h.ackLatencyMs.p50, b.ackLatencyMs.p50),
      ackP99: ratio(h.ackLatencyMs.p99, b.ackLatencyMs.p99),
      deliveryP50: ratio(h.deliveryLatencyMs.p50, b.deliveryLatencyMs.p50),
      deliveryP99: ratio(h.deliveryLatencyMs.p99, b.deliveryLatencyMs.p99),
      serverCpuShare: ratio(h.serverCpuShare, b.serverCpuShare),
    };
    // Each hostile phase against the baseline phase just before it.
    result.ratiosByPair = phases
      .map((p, k) => [phases[k - 1], p])
      .filter(([before, p]) => before?.kind === "baseline" && p.kind === "hostile")
      .map(([before, p]) => ({
        phases: [before.phase, p.phase],
        ackP50: ratio(p.ackLatencyMs.p50, before.ackLatencyMs.p50),
        ackP99: ratio(p.ackLatencyMs.p99, before.ackLatencyMs.p99),
        deliveryP50: ratio(p.deliveryLatencyMs.p50, before.deliveryLatencyMs.p50),
        deliveryP99: ratio(p.deliveryLatencyMs.p99, before.deliveryLatencyMs.p99),
      }));
    result.hostileTotals = addHostile(phases.filter((p) => p.hostile).map((p) => p.hostile));
    const normalClosed = normal.filter((c) => c.closeCode !== 0);
    const merged = mergeChecks(finished);
    result.normal = {
      // Every error frame a normal socket got, in a phase or between them.
      errorFrames: normal.reduce((sum, c) => sum + (c.frames.error ?? 0), 0),
      errorFramesByCode: normalErrors,
      rateLimited: normalErrors.rate_limited ?? 0,
      closed: normalClosed.length,
      closeCodes: countBy(normalClosed.map((c) => c.closeCode)),
    };
    // The scenario's checks: the normal users' messages, and no normal socket refused or closed.
    result.checks = {
      ...merged,
      normalRateLimited: result.normal.rateLimited,
      normalClosed: normalClosed.length,
      normalErrorFrames: result.normal.errorFrames,
      ok: merged.ok && normalClosed.length === 0 && result.normal.rateLimited === 0 && result.normal.errorFrames === 0,
    };
    ctx.log(
      `  hostile ÷ baseline (medians of ${h.phases} and ${b.phases} phases): ack p50 ${result.ratios.ackP50}× p99 ${result.ratios.ackP99}×, delivery p50 ${result.ratios.deliveryP50}× p99 ${result.ratios.deliveryP99}×; normal users refused ${result.normal.rateLimited}, closed ${normalClosed.length}`,
    );
  } finally {
    await closeAll(normal);
    await server.stop();
  }
  return result;
}

/** A Run that also counts its clients' error frames by code. */
class CountingRun extends Run {
  /**
   * @param {Client[]} clients
   * @param {number} capacity
   * @param {Record<string, number>} codes
   */
  constructor(clients, capacity, codes) {
    super(clients, capacity);
    this.codes = codes;
  }

  /** @param {Client} client @param {any} frame @param {number} at */
  onFrame(client, frame, at) {
    if (frame.type === "error") this.codes[frame.code] = (this.codes[frame.code] ?? 0) + 1;
    super.onFrame(client, frame, at);
  }
}

/** A read marker (the client's last seq) from each client every `everyMs`, their times spread over it. */
function readMarkers(/** @type {Client[]} */ clients, /** @type {number} */ everyMs) {
  let sent = 0;
  /** @type {ReturnType<typeof setTimeout>[]} */
  const timers = [];
  /** @type {ReturnType<typeof setInterval>[]} */
  const intervals = [];
  clients.forEach((client, i) => {
    const read = () => {
      if (client.lastSeq > 0 && client.ws.readyState === WebSocket.OPEN) {
        client.send({ type: "read", seq: client.lastSeq });
        sent++;
      }
    };
    timers.push(
      setTimeout(
        () => {
          read();
          intervals.push(setInterval(read, everyMs));
        },
        Math.round((everyMs * i) / clients.length),
      ),
    );
  });
  return {
    sent: () => sent,
    stop() {
      for (const t of timers) clearTimeout(t);
      for (const t of intervals) clearInterval(t);
    },
  };
}

/** What the hostile sockets of a phase did and got back. */
function newHostileStats() {
  return {
    connects: 0,
    /** @type {Record<string, number>} */
    upgradeRefused: {},
    cycles: 0,
    /** Frames sent, by step. */
    sent: { garbage: 0, oversized: 0, binary: 0, signals: 0, sends: 0 },
    /** @type {Record<string, Record<string, number>>} error frames received, by step and code */
    errorFrames: {},
    /** Hostile sends that were stored (acked): what the send bucket let through. */
    acks: 0,
    /** @type {Record<string, number>} closes by code, whatever the step */
    closes: {},
    /** @type {Record<string, Record<string, number>>} closes by step and code */
    closesByStep: {},
    /** @type {Record<string, number>} steps after which the server did not close (or answer) within 5 s */
    unanswered: {},
    /** rate_limited frames a flood socket got before its close, one entry per flood that was closed */
    refusalsBeforeClose: { signals: /** @type {number[]} */ ([]), sends: /** @type {number[]} */ ([]) },
    /** how long each flood that was closed ran, from its first frame to its 4429 (ms) */
    floodMsBeforeClose: { signals: /** @type {number[]} */ ([]), sends: /** @type {number[]} */ ([]) },
    /** Garbage frames not answered by an error frame within 5 s. */
    garbageUnanswered: 0,
  };
}

/** @typedef {ReturnType<typeof newHostileStats>} HostileStats */

/**
 * One hostile socket's loop, until `stop()`; `done` resolves once its socket is closed.
 * @param {import("../lib/clients.mjs").Target} target
 * @param {string} room
 * @param {string} user
 * @param {HostileSizes} sizes
 * @param {HostileStats} stats
 */
function hostileSocket(target, room, user, sizes, stats) {
  let stopping = false;
  /** @type {() => void} */
  let stopNow = () => {};
  /** Resolves when the phase stops the socket: every wait of the loop ends then too. */
  const stopped = new Promise((resolve) => {
    stopNow = () => resolve(undefined);
  });
  /** @type {Client | null} */
  let client = null;
  /** Sockets this loop closed itself (at the end, or after an unanswered step): their closes are not counted. */
  const closedByUs = new WeakSet();
  let localIds = 0;
  /** The step the socket is in, for the error frames and closes it gets. */
  let step = "garbage";
  let replies = 0;
  let refusals = 0;
  let floodStart = 0;
  /** Send times of the frames in flight. */
  /** @type {number[]} */
  let inFlight = [];
  /** @type {(() => void) | null} */
  let wake = null;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const isOpen = () => client !== null && client.ws.readyState === WebSocket.OPEN;
  /** Waits for `promise` at most `ms`, and not past the stop; true if it settled. */
  const within = (/** @type {Promise<unknown>} */ promise, /** @type {number} */ ms) =>
    Promise.race([promise.then(() => true), sleep(ms).then(() => false), stopped.then(() => false)]);

  /** Every close the server made, by code and by step; a flood's refusals before its 4429. */
  const onClose = (/** @type {Client} */ c) => {
    poke();
    if (closedByUs.has(c) || !c.ready) return;
    const code = String(c.closeCode);
    stats.closes[code] = (stats.closes[code] ?? 0) + 1;
    bump(stats.closesByStep, step, code);
    if ((step === "signals" || step === "sends") && c.closeCode === 4429) {
      stats.refusalsBeforeClose[step].push(refusals);
      stats.floodMsBeforeClose[step].push(Math.round(now() - floodStart));
    }
  };

  const connect = async () => {
    while (!stopping) {
      const c = new Client(await target.endpoint(room, user), user);
      c.opened.catch(() => {});
      stats.connects++;
      c.run = {
        onFrame(_client, frame) {
          if (frame.type === "error") {
            bump(stats.errorFrames, step, frame.code);
            if (frame.code === "rate_limited") refusals++;
          } else if (frame.type === "ack") stats.acks++;
          else return;
          replies++;
          inFlight.shift();
          poke();
        },
      };
      c.closed.then(() => onClose(c));
      let ready = false;
      try {
        ready = await within(c.opened, CONNECT_WAIT_MS);
      } catch (err) {
        const status = /upgrade refused: (\d+)/.exec(String(err))?.[1] ?? "failed";
        stats.upgradeRefused[status] = (stats.upgradeRefused[status] ?? 0) + 1;
      }
      if (ready) {
        client = c;
        inFlight = [];
        return true;
      }
      closedByUs.add(c);
      c.ws.terminate();
      if (!stopping) await within(stopped, sizes.reconnectPauseMs);
    }
    return false;
  };

  /** Resolves when a frame may go: fewer than `window` in flight (or the socket closed, or stopping). */
  const slot = async () => {
    for (;;) {
      const t = now();
      while (inFlight.length > 0 && /** @type {number} */ (inFlight[0]) + sizes.creditMs <= t) inFlight.shift();
      if (!isOpen() || stopping) return;
      const ws = /** @type {Client} */ (client).ws;
      if (inFlight.length < sizes.window && ws.bufferedAmount < 65_536) return;
      const waitMs = inFlight.length >= sizes.window ? /** @type {number} */ (inFlight[0]) + sizes.creditMs - t : 1;
      await new Promise((resolve) => {
        const timer = setTimeout(
          () => {
            wake = null;
            resolve(undefined);
          },
          Math.max(1, waitMs),
        );
        wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
    }
  };

  /** @param {string | Buffer} data */
  const send = (data) => {
    /** @type {Client} */ (client).ws.send(data);
    inFlight.push(now());
  };

  /** Waits (bounded) for the close the server owes after this step; counts it as unanswered if none came. */
  const expectClose = async (/** @type {string} */ name) => {
    if (stopping) return;
    const c = /** @type {Client} */ (client);
    if (await within(c.closed, CLOSE_WAIT_MS)) return;
    if (stopping) return;
    stats.unanswered[name] = (stats.unanswered[name] ?? 0) + 1;
    closedByUs.add(c);
    c.ws.terminate();
  };

  /**
   * Floods frames as fast as the socket takes them, within the flood's bounds, then waits for the 4429.
   * @param {"signals" | "sends"} name
   * @param {(n: number) => string} frameOf
   */
  const flood = async (name, frameOf) => {
    refusals = 0;
    floodStart = now();
    const deadline = now() + FLOOD_MAX_MS;
    for (let n = 0; n < FLOOD_MAX_FRAMES && now() < deadline; n++) {
      await slot();
      if (!isOpen() || stopping) break;
      send(frameOf(n));
      stats.sent[name]++;
    }
    await expectClose(name);
  };

  const steps = {
    async garbage() {
      replies = 0;
      let sent = 0;
      for (; sent < sizes.garbagePerCycle; sent++) {
        await slot();
        if (!isOpen() || stopping) return;
        send(/** @type {string} */ (GARBAGE[sent % GARBAGE.length]));
        stats.sent.garbage++;
      }
      const deadline = now() + CLOSE_WAIT_MS;
      while (replies < sent && isOpen() && !stopping && now() < deadline) await sleep(5);
      if (!stopping && isOpen()) stats.garbageUnanswered += Math.max(0, sent - replies);
    },
    async oversized() {
      send(OVERSIZED);
      stats.sent.oversized++;
      await expectClose("oversized");
    },
    async binary() {
      send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]));
      stats.sent.binary++;
      await expectClose("binary");
    },
    signals: () =>
      flood("signals", (n) => {
        const c = /** @type {Client} */ (client);
        return n % 3 === 2
          ? JSON.stringify({ type: "read", seq: Math.max(1, c.lastSeq) })
          : JSON.stringify({ type: "typing", typing: n % 3 === 0 });
      }),
    sends: () =>
      flood("sends", () => {
        const id = localIds++;
        return JSON.stringify({ type: "send", localId: `h-${id}`, content: `hostile flood ${id}` });
      }),
  };
  const order = /** @type {(keyof typeof steps)[]} */ (["garbage", "oversized", "binary", "signals", "sends"]);

  const done = (async () => {
    try {
      while (!stopping) {
        for (const name of order) {
          if (stopping) break;
          if (!isOpen()) {
            if (client) await within(stopped, sizes.reconnectPauseMs);
            if (stopping || !(await connect())) break;
          }
          step = name;
          await steps[name]();
        }
        if (!stopping) stats.cycles++;
      }
    } finally {
      if (client) {
        closedByUs.add(client);
        await closeAll([client], 5000);
      }
    }
  })();
  return {
    stop() {
      stopping = true;
      stopNow();
      poke();
    },
    done,
  };
}

/** The counters of a phase, with the refusals before each close as min / median / max. */
function summarizeHostile(/** @type {HostileStats} */ s) {
  const spread = (/** @type {number[]} */ xs) =>
    xs.length === 0 ? null : { floods: xs.length, min: Math.min(...xs), median: median(xs), max: Math.max(...xs) };
  return {
    connects: s.connects,
    upgradeRefused: s.upgradeRefused,
    cycles: s.cycles,
    sent: s.sent,
    errorFrames: s.errorFrames,
    acks: s.acks,
    closes: s.closes,
    closesByStep: s.closesByStep,
    unanswered: s.unanswered,
    garbageUnanswered: s.garbageUnanswered,
    rateLimitedBeforeClose: {
      signals: spread(s.refusalsBeforeClose.signals),
      sends: spread(s.refusalsBeforeClose.sends),
    },
    floodMsBeforeClose: { signals: spread(s.floodMsBeforeClose.signals), sends: spread(s.floodMsBeforeClose.sends) },
  };
}

/** The hostile counters of several phases, added up (the spreads are the phases' own, kept as a list). */
function addHostile(/** @type {any[]} */ all) {
  /** @type {Record<string, any>} */
  const out = {};
  const add = (/** @type {Record<string, any>} */ into, /** @type {Record<string, any>} */ from) => {
    for (const [k, v] of Object.entries(from)) {
      if (typeof v === "number") into[k] = (into[k] ?? 0) + v;
      else if (v && typeof v === "object") {
        into[k] = into[k] ?? {};
        add(into[k], v);
      }
    }
  };
  for (const h of all) {
    const { rateLimitedBeforeClose, floodMsBeforeClose, framesPerSecondInWindow, ...counters } = h;
    add(out, counters);
  }
  out.floodMsBeforeClose = all.map((h) => h.floodMsBeforeClose);
  out.framesPerSecondInWindow = all.map((h) => h.framesPerSecondInWindow);
  out.rateLimitedBeforeClose = all.map((h) => h.rateLimitedBeforeClose);
  return out;
}

/** Frames received by all clients so far, by type. */
function tally(/** @type {Client[]} */ clients) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const c of clients) for (const [type, n] of Object.entries(c.frames)) out[type] = (out[type] ?? 0) + n;
  return out;
}

/** Counts one more of `key` under `group`. */
function bump(
  /** @type {Record<string, Record<string, number>>} */ counts,
  /** @type {string} */ group,
  /** @type {string} */ key,
) {
  const byKey = counts[group] ?? {};
  counts[group] = byKey;
  byKey[key] = (byKey[key] ?? 0) + 1;
}

const sumValues = (/** @type {Record<string, number>} */ o) => Object.values(o).reduce((s, v) => s + v, 0);

const countBy = (/** @type {number[]} */ xs) => {
  /** @type {Record<string, number>} */
  const out = {};
  for (const x of xs) out[String(x)] = (out[String(x)] ?? 0) + 1;
  return out;
};

const median = (/** @type {number[]} */ xs) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return 0;
  return round(sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2, 2);
};

/** @param {ReturnType<typeof histogram>[]} hs */
function mergeHistograms(hs) {
  const all = histogram();
  for (const h of hs) all.add(h);
  return all;
}
