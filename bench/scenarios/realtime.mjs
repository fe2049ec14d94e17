// The send path and fan-out: durable sends/s into one conversation and into 100 at once, and delivery latency
// at fixed rates, each measured against the floor Durable Object and the Node ws server in the same run.
import { closeAll, connectAll, now, users } from "../lib/clients.mjs";
import { openLoop, percentiles, Run, saturate } from "../lib/load.mjs";
import { cpuMeter, round } from "../lib/proc.mjs";
import { startProfile } from "../lib/profiler.mjs";

/** In-flight sends over all senders of a saturation run; each sender keeps its share of it. */
const IN_FLIGHT = 64;
const CAPACITY = 300_000;
/** Messages a saturation run may send: the fastest reference, Node ws, sends about 20,000/s with 2 clients. */
const capacityFor = (/** @type {number} */ clients) => Math.min(2_000_000, Math.floor(40_000_000 / clients));

/**
 * Durable sends/s into one conversation: every client sends, each keeping its share of IN_FLIGHT sends in
 * flight; the rate is acks per second. The targets take turns: after a warm-up of each, `rounds` rounds in
 * which each target saturates its conversation for `roundMs` (in a rotating order), so that a burst of other
 * work on the machine hits one round of one target, not a whole measurement. The rate of a target is the
 * median of its rounds; every client must get every message of every round.
 * @param {import("../run.mjs").Context} ctx
 * @param {number} clientCount
 */
export async function sendThroughput(ctx, clientCount) {
  const window = Math.max(1, Math.ceil(IN_FLIGHT / clientCount));
  const { warmupMs, roundMs, rounds } = ctx.sizes.throughput;
  /** @type {Record<string, any>} */
  const result = { clients: clientCount, windowPerClient: window, warmupMs, roundMs, rounds };
  /** @type {{ target: import("../lib/clients.mjs").Target, clients: import("../lib/clients.mjs").Client[], run: Run, rates: number[], cpu: any[], profile?: any }[]} */
  const sides = [];
  try {
    for (const target of ctx.targets) {
      const people = users(`tp${clientCount}-${target.name}-${ctx.runId}`, clientCount);
      const room = await target.room(people);
      const clients = await connectAll(
        target,
        people.map((user) => ({ room, user })),
      );
      sides.push({ target, clients, run: new Run(clients, capacityFor(clientCount)), rates: [], cpu: [] });
    }
    for (const side of sides) await saturate(side.run, { senders: side.clients, window, durationMs: warmupMs });
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < sides.length; k++) {
        const side = /** @type {(typeof sides)[number]} */ (sides[(round + k) % sides.length]);
        const profile =
          ctx.profile && round === 0 && side.target.name !== "node-ws"
            ? await startProfile(ctx.server.inspectorPort)
            : null;
        const meter = cpuMeter(side.target.serverPids);
        const t0 = now();
        await saturate(side.run, { senders: side.clients, window, durationMs: roundMs });
        side.cpu.push(meter());
        // The first moments of a round fill the pipeline: they are not counted.
        side.rates.push(side.run.ackRate(t0 + RAMP_MS, t0 + roundMs));
        if (side.run.sent >= side.run.capacity) throw new Error(`${side.target.name} reached the run's capacity`);
        if (profile) side.profile = await profile.stop(`throughput-${clientCount}-${side.target.name}`);
      }
    }
    for (const side of sides) {
      const settled = await side.run.settle();
      const sendsPerSecond = median(side.rates);
      result[side.target.name] = {
        sendsPerSecond: round(sendsPerSecond, 0),
        roundRates: side.rates.map((r) => round(r, 0)),
        deliveriesPerSecond: round(sendsPerSecond * (clientCount - 1), 0),
        ackLatencyMs: percentiles(side.run.ackLatency),
        settled,
        cpu: sumCpu(side.cpu),
        checks: side.run.finish(),
        profile: side.profile,
      };
      ctx.log(
        `  ${side.target.name}: ${result[side.target.name].sendsPerSecond} sends/s (rounds ${result[side.target.name].roundRates.join(", ")})`,
      );
      if (side.profile) ctx.log(`  profile: ${side.profile.path}`);
    }
  } finally {
    for (const side of sides) await closeAll(side.clients);
  }
  result.oursOverFloor = ratio(result.ours?.sendsPerSecond, result.floor?.sendsPerSecond);
  result.oursOverNodeWs = ratio(result.ours?.sendsPerSecond, result["node-ws"]?.sendsPerSecond);
  // The same ratio round by round: each pair ran within seconds of each other.
  result.oursOverFloorByRound = (result.ours?.roundRates ?? []).map(
    (/** @type {number} */ r, /** @type {number} */ i) => ratio(r, result.floor?.roundRates?.[i]),
  );
  return result;
}

const RAMP_MS = 250;

const median = (/** @type {number[]} */ xs) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
};

/** CPU of several phases, added up. */
export function sumCpu(/** @type {any[]} */ phases) {
  const sum = (/** @type {string} */ key) =>
    round(
      phases.reduce((s, p) => s + p[key], 0),
      2,
    );
  /** @type {Record<string, number>} */
  const byProcess = {};
  for (const p of phases)
    for (const [k, v] of Object.entries(p.serverByProcess)) byProcess[k] = round((byProcess[k] ?? 0) + v, 2);
  const wall = sum("wallSeconds");
  return {
    wallSeconds: wall,
    serverCpuSeconds: sum("serverCpuSeconds"),
    generatorCpuSeconds: sum("generatorCpuSeconds"),
    serverCpuShare: round(sum("serverCpuSeconds") / wall, 2),
    generatorCpuShare: round(sum("generatorCpuSeconds") / wall, 2),
    serverByProcess: byProcess,
  };
}

/**
 * Fan-out latency at a fixed rate: `sockets` sockets in one conversation (up to 100 users, up to 10 sockets
 * each, as the product's limits allow), one sender socket per user in turn, open loop. Latency is from the
 * scheduled send time to each receiving socket.
 * Also counts the frames each kind of server sent during the measured run, by type (message, ack, receipt...).
 *
 * With `storm`, our sockets are handed to it once the load is done (the reconnect storm reuses them rather
 * than opening 1000 more).
 * @param {import("../run.mjs").Context} ctx
 * @param {{ sockets: number, rate: number }} size
 * @param {{ storm?: (clients: import("../lib/clients.mjs").Client[], room: string, people: string[]) => Promise<void> }} [hooks]
 */
export async function fanOut(ctx, { sockets, rate }, hooks = {}) {
  const { warmupMs, measureMs } = ctx.sizes.fanOut;
  const userCount = Math.min(sockets, 100);
  const count = Math.round((rate * measureMs) / 1000);
  /** @type {Record<string, any>} */
  const result = { sockets, users: userCount, rate, messages: count, deliveries: count * sockets };
  for (const target of ctx.targets) {
    const people = users(`fo${sockets}-${target.name}-${ctx.runId}`, userCount);
    const room = await target.room(people);
    const plan = Array.from({ length: sockets }, (_, i) => ({
      room,
      user: /** @type {string} */ (people[i % userCount]),
    }));
    const connectStart = now();
    const clients = await connectAll(target, plan);
    const connectSeconds = (now() - connectStart) / 1000;
    const senders = clients.slice(0, userCount);
    try {
      // Warm-up at the same rate, not measured: every socket is live and the code is hot.
      const warm = new Run(clients, Math.max(1, Math.round((rate * warmupMs) / 1000)));
      await openLoop(warm, { senders, rate, count: warm.capacity });
      await warm.settle();
      warm.finish();

      const run = new Run(clients, count);
      const framesBefore = frameTally(clients);
      const meter = cpuMeter(target.serverPids);
      const profiler = ctx.profile && target.name !== "node-ws" ? await startProfile(ctx.server.inspectorPort) : null;
      await openLoop(run, { senders, rate, count });
      const profile = await profiler?.stop(`fanout-${sockets}x${rate}-${target.name}`);
      // A server that falls behind gets time to catch up: late is reported as latency, lost as undelivered.
      const settled = await run.settle(Math.max(20_000, 3 * measureMs));
      const framesAfter = frameTally(clients);
      result[target.name] = {
        latencyMs: percentiles(run.latency),
        ackLatencyMs: percentiles(run.ackLatency),
        generatorLagMs: percentiles(run.lag),
        connectSeconds: round(connectSeconds, 2),
        connectsPerSecond: round(sockets / connectSeconds, 0),
        settled,
        cpu: meter(),
        framesReceived: Object.fromEntries(
          Object.entries(framesAfter).map(([type, n]) => [type, n - (framesBefore[type] ?? 0)]),
        ),
        checks: run.finish(),
        profile,
      };
      const r = result[target.name];
      if (profile) ctx.log(`  profile: ${profile.path}`);
      ctx.log(`  ${target.name}: p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} p99.9 ${r.latencyMs.p999} ms`);
      if (target.name === "ours" && hooks.storm) await hooks.storm(clients, room, people);
    } finally {
      await closeAll(clients);
    }
  }
  return result;
}

/**
 * Many conversations at once: `rooms` conversations of 2 users, each with one sending and one receiving socket;
 * the senders keep IN_FLIGHT * 4 sends in flight in all. Aggregate durable messages/s, D1 being shared.
 * @param {import("../run.mjs").Context} ctx
 * @param {number} roomCount
 */
export async function manyConversations(ctx, roomCount) {
  const { warmupMs, measureMs } = ctx.sizes.throughput;
  const window = Math.max(1, Math.ceil((IN_FLIGHT * 4) / roomCount));
  /** @type {Record<string, any>} */
  const result = { conversations: roomCount, windowPerSender: window, warmupMs, measureMs };
  for (const target of ctx.targets.filter((t) => t.name !== "node-ws")) {
    /** @type {{ room: string, user: string }[]} */
    const plan = [];
    for (let r = 0; r < roomCount; r++) {
      const pair = users(`mc${r}-${target.name}-${ctx.runId}`, 2);
      const room = await target.room(pair);
      for (const user of pair) plan.push({ room, user });
    }
    const clients = await connectAll(target, plan);
    try {
      // One Run per conversation: delivery and order are per conversation.
      const runs = [];
      for (let r = 0; r < roomCount; r++) runs.push(new Run(clients.slice(2 * r, 2 * r + 2), CAPACITY / 100));
      const meter = cpuMeter(target.serverPids);
      const t0 = now();
      await Promise.all(
        runs.map((run) =>
          saturate(run, {
            senders: [/** @type {import("../lib/clients.mjs").Client} */ (run.clients[0])],
            window,
            durationMs: warmupMs + measureMs,
          }),
        ),
      );
      const settled = (await Promise.all(runs.map((run) => run.settle()))).every(Boolean);
      const rate = runs.reduce((sum, run) => sum + run.ackRate(t0 + warmupMs, t0 + warmupMs + measureMs), 0);
      const checks = runs.map((run) => run.finish());
      result[target.name] = {
        messagesPerSecond: round(rate, 0),
        settled,
        cpu: meter(),
        checks: mergeChecks(checks),
      };
    } finally {
      await closeAll(clients);
    }
    ctx.log(`  ${target.name}: ${result[target.name].messagesPerSecond} messages/s over ${roomCount} conversations`);
  }
  result.oursOverFloor = ratio(result.ours?.messagesPerSecond, result.floor?.messagesPerSecond);
  return result;
}

/** Frames received by all clients so far, by type. */
function frameTally(/** @type {import("../lib/clients.mjs").Client[]} */ clients) {
  /** @type {Record<string, number>} */
  const tally = {};
  for (const c of clients) for (const [type, n] of Object.entries(c.frames)) tally[type] = (tally[type] ?? 0) + n;
  return tally;
}

/** @param {ReturnType<Run["finish"]>[]} checks */
export function mergeChecks(checks) {
  const sent = checks.reduce((s, c) => s + c.sent, 0);
  return {
    sent,
    deliveredPercent: round(Math.min(...checks.map((c) => c.deliveredPercent)), 3),
    duplicates: checks.reduce((s, c) => s + c.duplicates, 0),
    orderViolations: checks.reduce((s, c) => s + c.orderViolations, 0),
    errorFrames: checks.reduce((s, c) => s + c.errorFrames, 0),
    ok: checks.every((c) => c.ok),
    errorSamples: checks.flatMap((c) => c.errorSamples).slice(0, 5),
  };
}

export const ratio = (/** @type {number|undefined} */ a, /** @type {number|undefined} */ b) =>
  a === undefined || b === undefined || b === 0 ? null : round(a / b, 2);
