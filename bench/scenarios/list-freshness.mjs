// List freshness: the conversation list (`GET /v1/conversations`) is read from D1, which each room's outbox pump
// feeds (src/room/outbox.ts, ~250 ms coalescing), so it trails the rooms. One watcher is in `conversations`
// conversations; each has one more participant with a socket who sends into it at a fixed rate (open loop,
// all conversations interleaved evenly). The watcher polls its list (limit 100) every `pollMs`. For each acked
// message: the time from its ack to the first list response (as received) showing its conversation's lastSeq
// at or past the message's seq. A message no response showed before the end of the polling counts as unseen.
import { closeAll, connectAll, now } from "../lib/clients.mjs";
import { firstAtLeast, histogram, percentiles, Run, spreadOver } from "../lib/load.mjs";
import { cpuMeter, round, sleep } from "../lib/proc.mjs";
import { startProfile } from "../lib/profiler.mjs";
import { mergeChecks } from "./realtime.mjs";

/** How long the watcher keeps polling after the last ack for what it has not seen yet. */
const TAIL_MS = 10_000;
/** Above this ack p99 the server did not keep up with the rate: the run says so. */
const KEPT_UP_ACK_P99_MS = 500;

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ conversations: number, ratePerConversation: number, durationMs: number, warmupMs: number, pollMs: number, note?: string }} options
 */
export async function listFreshness(ctx, { conversations, ratePerConversation, durationMs, warmupMs, pollMs, note }) {
  const target = ctx.product.ours;
  const api = ctx.product.api;
  const watcher = `lf-watcher-${ctx.runId}`;
  const senders = Array.from({ length: conversations }, (_, i) => `lf-sender-${ctx.runId}-${i}`);
  /** @type {string[]} */
  const rooms = new Array(conversations);
  let made = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (made < conversations) {
        const i = made++;
        // Each sender creates its own: one user creating 100 at once is over the creation limit.
        rooms[i] = await target.room([/** @type {string} */ (senders[i]), watcher]);
      }
    }),
  );
  const index = new Map(rooms.map((room, i) => [room, i]));
  const clients = await connectAll(
    target,
    rooms.map((room, i) => ({ room, user: /** @type {string} */ (senders[i]) })),
  );
  const totalRate = conversations * ratePerConversation;
  /** @type {Record<string, any>} */
  const result = { conversations, ratePerConversation, totalRate, durationMs, pollMs, note };
  try {
    // Warm-up at the same rate, not measured (and its messages' projections are out of D1's way before).
    const warm = clients.map((c) => new Run([c], Math.ceil((ratePerConversation * warmupMs) / 1000)));
    await interleaved(warm, ratePerConversation);
    await Promise.all(warm.map((run) => run.settle()));
    for (const run of warm) run.finish();
    await sleep(1000);

    const perConversation = Math.round((ratePerConversation * durationMs) / 1000);
    const runs = clients.map((c) => new Run([c], perConversation));
    /** Acks: conversation, seq, when. */
    const acks = {
      conversation: new Int32Array(perConversation * conversations),
      seq: new Float64Array(perConversation * conversations),
      at: new Float64Array(perConversation * conversations),
      n: 0,
    };
    runs.forEach((run, conversation) => {
      run.onAck = (_client, _index, frame, at) => {
        const k = acks.n++;
        acks.conversation[k] = conversation;
        acks.seq[k] = frame.message.seq;
        acks.at[k] = at;
      };
    });
    // Per conversation, the list's lastSeq as the polls saw it: [received at, lastSeq] with lastSeq growing.
    /** @type {{ at: number[], seq: number[] }[]} */
    const seen = rooms.map(() => ({ at: [], seq: [] }));
    const pollLatency = histogram();
    let polls = 0;
    let wrongPolls = 0;
    let sending = true;
    /** When every ack was in: from then on, the watcher polls for at most TAIL_MS for what it has not seen. */
    let settledAt = Number.POSITIVE_INFINITY;
    const caughtUp = () => runs.every((run, i) => (seen[i]?.seq.at(-1) ?? 0) >= run.clients[0].lastSeq);
    const poller = (async () => {
      while (sending || (now() - settledAt < TAIL_MS && !caughtUp())) {
        const started = now();
        const res = await api("GET", "/v1/conversations?limit=100", watcher);
        const at = now();
        polls++;
        pollLatency.recordValue(Math.round(res.ms * 1000));
        const list = res.status === 200 ? res.body?.conversations : null;
        if (!Array.isArray(list) || list.length !== conversations) wrongPolls++;
        for (const c of list ?? []) {
          const i = index.get(c.id);
          if (i === undefined) continue;
          const s = /** @type {{ at: number[], seq: number[] }} */ (seen[i]);
          if (c.lastSeq > (s.seq.at(-1) ?? -1)) {
            s.at.push(at);
            s.seq.push(c.lastSeq);
          }
        }
        await sleep(Math.max(0, started + pollMs - now()));
      }
    })();
    const meter = cpuMeter(target.serverPids);
    const profiler = ctx.profile ? await startProfile(ctx.server.inspectorPort) : null;
    await interleaved(runs, ratePerConversation);
    const profile = await profiler?.stop("list-freshness");
    if (profile) ctx.log(`  profile: ${profile.path}`);
    const settled = (await Promise.all(runs.map((run) => run.settle()))).every(Boolean);
    settledAt = now();
    sending = false;
    await poller;
    const cpu = meter();

    const freshness = histogram();
    let unseen = 0;
    let withinSecond = 0;
    for (let k = 0; k < acks.n; k++) {
      const s = /** @type {{ at: number[], seq: number[] }} */ (seen[/** @type {number} */ (acks.conversation[k])]);
      const seq = /** @type {number} */ (acks.seq[k]);
      // The first poll that showed seq or later (the polls' lastSeq only grow).
      const i = firstAtLeast(s.seq, seq);
      if (i === s.seq.length) {
        unseen++;
        continue;
      }
      const ms = Math.max(0, /** @type {number} */ (s.at[i]) - /** @type {number} */ (acks.at[k]));
      freshness.recordValue(Math.round(ms * 1000));
      if (ms <= 1000) withinSecond++;
    }
    const ackLatency = histogram();
    const lag = histogram();
    for (const run of runs) {
      ackLatency.add(run.ackLatency);
      lag.add(run.lag);
    }
    Object.assign(result, {
      acked: acks.n,
      freshnessMs: percentiles(freshness),
      withinOneSecondPercent: acks.n === 0 ? 0 : round((100 * withinSecond) / acks.n, 2),
      unseen,
      polls,
      wrongPolls,
      pollLatencyMs: percentiles(pollLatency),
      ackLatencyMs: percentiles(ackLatency),
      // A server that falls behind its sends makes the list look late for a reason that is not the pump.
      serverKeptUp: ackLatency.getValueAtPercentile(99) <= KEPT_UP_ACK_P99_MS * 1000,
      generatorLagMs: percentiles(lag),
      settled,
      cpu,
      profile,
      checks: mergeChecks(runs.map((run) => run.finish())),
    });
    if (note) ctx.log(`  ${note}`);
    ctx.log(
      `  ${totalRate} msg/s into ${conversations} conversations: ack to list p50 ${result.freshnessMs.p50} p99 ${result.freshnessMs.p99} max ${result.freshnessMs.max} ms, ${result.withinOneSecondPercent} % within 1 s, ${unseen} unseen (${polls} polls, p50 ${result.pollLatencyMs.p50} ms each; ack p99 ${result.ackLatencyMs.p99} ms)`,
    );
  } finally {
    await closeAll(clients);
  }
  return result;
}

/** The conversations' sends, interleaved evenly: each conversation at `ratePerConversation`, as many as they take. */
const interleaved = (/** @type {Run[]} */ runs, /** @type {number} */ ratePerConversation) =>
  spreadOver(runs, {
    rate: ratePerConversation * runs.length,
    count: Math.min(...runs.map((run) => run.capacity)) * runs.length,
    offset: 0,
  });
