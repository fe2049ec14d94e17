// Reconnect storm: N sockets of one conversation (100 users, N/100 sockets each) go away, messages are sent
// meanwhile, then all N reconnect at once with `?since=` their last seq. Measured: the time until every client
// has caught up (every missed message, exactly once, in order), and how long each one took.
import { Client, closeAll, connectAll, now, users } from "../lib/clients.mjs";
import { histogram, percentiles, Run } from "../lib/load.mjs";
import { cpuMeter, round, sleep } from "../lib/proc.mjs";

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ sockets: number, missed: number }} options
 * @param {{ clients: Client[], room: string, people: string[] }} [connected] open sockets of one conversation to
 *   start from (the 1000-socket fan-out's); without them, the storm opens its own first
 */
export async function reconnectStorm(ctx, { sockets, missed }, connected) {
  const target = ctx.product.ours;
  const api = ctx.product.api;
  const people = connected?.people ?? users(`rc-${ctx.runId}`, Math.min(100, sockets));
  const room = connected?.room ?? (await target.room(people));
  const plan = Array.from({ length: connected?.clients.length ?? sockets }, (_, i) => ({
    room,
    user: /** @type {string} */ (connected?.clients[i]?.user ?? people[i % people.length]),
  }));

  const first = connected?.clients ?? (await connectAll(target, plan));
  // Each client's last seq: what it will reconnect with.
  const since = Math.max(...first.map((c) => c.lastSeq), ...first.map((c) => c.ready.lastSeq));
  await closeAll(first);
  await sleep(1000);

  // Sent while everyone is away, over REST.
  const tag = Run.newTag();
  for (let i = 0; i < missed; i++) {
    const sender = /** @type {string} */ (people[i % people.length]);
    const content = `${tag}|${i}|${now().toFixed(3)}|missed while away`;
    const res = await api("POST", `/v1/conversations/${room}/messages`, sender, { content, localId: `${tag}-${i}` });
    if (res.status !== 201) throw new Error(`sending a missed message: ${res.status} ${JSON.stringify(res.body)}`);
  }

  const endpoints = await Promise.all(plan.map((p) => target.endpoint(p.room, p.user, since)));
  const meter = cpuMeter(target.serverPids);
  const t0 = now();
  const clients = endpoints.map((endpoint, i) => new Client(endpoint, /** @type {string} */ (plan[i]?.user), i));
  const run = new Run(clients, missed, tag);
  run.sent = missed;
  run.expected = missed;
  try {
    const opened = await Promise.allSettled(clients.map((c) => c.opened));
    const refused = opened.filter((o) => o.status === "rejected");
    const settled = await run.settle(60_000);
    const cpu = meter();
    const caughtUp = histogram();
    const ready = histogram();
    let last = 0;
    for (let i = 0; i < clients.length; i++) {
      const at = /** @type {number} */ (run.completedAt[i]);
      if (at > 0) {
        caughtUp.recordValue(Math.round((at - t0) * 1000));
        last = Math.max(last, at - t0);
      }
      const client = /** @type {Client} */ (clients[i]);
      if (client.readyAt > 0) ready.recordValue(Math.round((client.readyAt - t0) * 1000));
    }
    const result = {
      sockets: plan.length,
      users: people.length,
      missed,
      allCaughtUpSeconds: settled ? round(last / 1000, 2) : null,
      caughtUpMs: percentiles(caughtUp),
      readyMs: percentiles(ready),
      refused: refused.length,
      refusedSample: refused.slice(0, 3).map((r) => String(/** @type {PromiseRejectedResult} */ (r).reason)),
      settled,
      cpu,
      checks: run.finish(),
    };
    ctx.log(`  all ${plan.length} caught up in ${result.allCaughtUpSeconds} s (p50 ${result.caughtUpMs.p50} ms)`);
    return result;
  } finally {
    await closeAll(clients);
  }
}
