// D1 off the send path: the send-ack latency of one conversation at a steady open-loop rate, against the run's
// product server and against a second one, started for this scenario from the same bundle with
// `D1_DELAY_MS` set (src/db/directory.ts: every D1 call of the Worker and the rooms waits that long first, as a
// far-away D1 primary would). Sends touch only the room's SQLite, so the delay should not show in the acks.
// The two servers take turns in rounds (rotating order), each with its own conversation of 2 clients who both
// send, so that a burst of other work on the machine hits one round of one side, not a whole measurement.
import { closeAll, connectAll, now, productTargets, users } from "../lib/clients.mjs";
import { histogram, openLoop, percentiles, Run } from "../lib/load.mjs";
import { cpuMeter, round, untilQuiet } from "../lib/proc.mjs";
import { startProduct } from "../lib/servers.mjs";
import { mergeChecks, ratio, sumCpu } from "./realtime.mjs";

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ delayMs: number, rate: number, warmupMs: number, roundMs: number, rounds: number }} options
 */
export async function d1Latency(ctx, { delayMs, rate, warmupMs, roundMs, rounds }) {
  /** @type {Record<string, any>} */
  const result = { clients: 2, delayMs, rate, warmupMs, roundMs, rounds };
  const startedAt = now();
  // run.mjs starts it with the run's server; started here when the scenario is called without it.
  const delayed =
    ctx.delayed ??
    (await startProduct({ vars: { ...ctx.vars, D1_DELAY_MS: String(delayMs) }, bundleFrom: ctx.server.bundleDir }));
  /** @type {{ name: "ours" | "delayed", target: import("../lib/clients.mjs").Target, api: any, clients: import("../lib/clients.mjs").Client[], runs: Run[], cpu: any[] }[]} */
  const sides = [];
  try {
    result.delayedServerStartSeconds = round(ctx.delayed ? delayed.startSeconds : (now() - startedAt) / 1000, 1);
    result.delayedServerQuietAfterSeconds = await untilQuiet([delayed.pid]);
    const other = productTargets(delayed);
    for (const [name, product] of /** @type {const} */ ([
      ["ours", ctx.product],
      ["delayed", other],
    ])) {
      const people = users(`d1-${name}-${ctx.runId}`, 2);
      const t0 = now();
      const room = await product.ours.room(people);
      const createMs = now() - t0;
      const clients = await connectAll(
        product.ours,
        people.map((user) => ({ room, user })),
      );
      sides.push({ name, target: product.ours, api: product.api, clients, runs: [], cpu: [] });
      // That the delay is there: the list is read from D1, and a new conversation is written to it first.
      const list = histogram();
      for (let i = 0; i < 5; i++) {
        const res = await product.api("GET", "/v1/conversations?limit=20", /** @type {string} */ (people[0]));
        if (res.status !== 200) throw new Error(`list on ${name}: ${res.status}`);
        list.recordValue(Math.round(res.ms * 1000));
      }
      result[name] = { createConversationMs: round(createMs, 1), listMs: percentiles(list) };
    }
    const burst = async (/** @type {(typeof sides)[number]} */ side, /** @type {number} */ ms) => {
      const count = Math.round((rate * ms) / 1000);
      const run = new Run(side.clients, count);
      await openLoop(run, { senders: side.clients, rate, count });
      await run.settle();
      return run;
    };
    for (const side of sides) (await burst(side, warmupMs)).finish();
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < sides.length; k++) {
        const side = /** @type {(typeof sides)[number]} */ (sides[(r + k) % sides.length]);
        const meter = cpuMeter(side.target.serverPids);
        side.runs.push(await burst(side, roundMs));
        side.cpu.push(meter());
      }
    }
    for (const side of sides) {
      Object.assign(result[side.name], {
        ackLatencyMs: percentiles(mergeHistograms(side.runs.map((run) => run.ackLatency))),
        ackP50ByRound: side.runs.map((run) => percentiles(run.ackLatency).p50),
        deliveryLatencyMs: percentiles(mergeHistograms(side.runs.map((run) => run.latency))),
        generatorLagMs: percentiles(mergeHistograms(side.runs.map((run) => run.lag))),
        cpu: sumCpu(side.cpu),
        checks: mergeChecks(side.runs.map((run) => run.finish())),
      });
      const s = result[side.name];
      ctx.log(
        `  ${side.name === "ours" ? "no delay" : `D1 +${delayMs} ms`}: ack p50 ${s.ackLatencyMs.p50} p99 ${s.ackLatencyMs.p99} ms (rounds ${s.ackP50ByRound.join(", ")}), list p50 ${s.listMs.p50} ms`,
      );
    }
  } finally {
    for (const side of sides) await closeAll(side.clients);
    await delayed.stop();
  }
  result.p50Ratio = ratio(result.delayed?.ackLatencyMs?.p50, result.ours?.ackLatencyMs?.p50);
  result.p99Ratio = ratio(result.delayed?.ackLatencyMs?.p99, result.ours?.ackLatencyMs?.p99);
  // The same ratio round by round: each pair ran within seconds of each other.
  result.p50RatioByRound = (result.ours?.ackP50ByRound ?? []).map((/** @type {number} */ p, /** @type {number} */ i) =>
    ratio(result.delayed?.ackP50ByRound?.[i], p),
  );
  // The delay must have been in effect, or the comparison says nothing.
  result.delayApplied = (result.delayed?.listMs?.p50 ?? 0) - (result.ours?.listMs?.p50 ?? 0) >= delayMs * 0.9;
  return result;
}

/** @param {ReturnType<typeof histogram>[]} hs */
function mergeHistograms(hs) {
  const all = histogram();
  for (const h of hs) all.add(h);
  return all;
}
