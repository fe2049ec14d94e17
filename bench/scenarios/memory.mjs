// Memory per idle socket: the resident memory of the server side (every process of its tree) before and after
// opening N idle sockets, spread over rooms of 100 users (the product's participant limit), for ours, the floor
// Durable Object (same runtime) and a fresh Node ws server with the same rooms.
//
// A fresh process grows its heaps on the first sockets it ever holds, far beyond what each socket keeps (a
// measured 380 KiB per socket for the first 1000 floor sockets of a fresh workerd, 60 KiB once warm), so that
// whichever target went first would look worst. So each target first opens and closes the same N sockets once
// (a warm-up round, not measured), then opens N again: the second round is measured. Before each sample the
// server's JS is garbage-collected (the Worker's isolate through the inspector, Node with --expose-gc), and its
// JS heap in use is reported beside the RSS: RSS alone also moves with when the last collection ran.
import { closeAll, connectAll, nodeWsTarget, users } from "../lib/clients.mjs";
import { round, sampleTree, sleep } from "../lib/proc.mjs";
import { startNodeWs } from "../lib/servers.mjs";

const SETTLE_MS = 1500;

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ sockets: number, rooms: number }} options
 */
export async function idleMemory(ctx, { sockets, rooms }) {
  const perRoom = Math.ceil(sockets / rooms);
  /** @type {Record<string, any>} */
  const result = { sockets: perRoom * rooms, rooms, socketsPerRoom: perRoom, method: "second of two rounds" };
  for (const target of [ctx.product.ours, ctx.product.floor]) {
    try {
      result[target.name] = await measure(target, perRoom, rooms, ctx.runId);
      ctx.log(`  ${target.name}: ${result[target.name].perSocketKiB} KiB per socket`);
    } catch (err) {
      // One target failing (say, the runtime refusing the Nth socket) must not hide the others' figures.
      result[target.name] = { error: String(err) };
      ctx.log(`  ${target.name}: FAILED ${err}`);
    }
  }
  const nodeWs = await startNodeWs();
  try {
    result["node-ws"] = await measure(nodeWsTarget(nodeWs), perRoom, rooms, ctx.runId);
  } finally {
    await nodeWs.stop();
  }
  ctx.log(`  node-ws: ${result["node-ws"].perSocketKiB} KiB per socket`);
  // A ratio of a figure within the noise (at or below zero) says nothing.
  const over = (/** @type {number} */ a, /** @type {number} */ b) => (a > 0 && b > 0 ? round(a / b, 1) : null);
  result.oursOverFloor = over(result.ours.perSocketKiB, result.floor?.perSocketKiB);
  result.oursOverNodeWs = over(result.ours.perSocketKiB, result["node-ws"].perSocketKiB);
  return result;
}

/**
 * @param {import("../lib/clients.mjs").Target} target
 * @param {number} perRoom
 * @param {number} rooms
 * @param {string} runId
 */
async function measure(target, perRoom, rooms, runId) {
  const people = users(`mem-${target.name}-${runId}`, perRoom);
  /** @type {{ room: string, user: string }[]} */
  const plan = [];
  for (let r = 0; r < rooms; r++) {
    const room = await target.room(people);
    for (const user of people) plan.push({ room, user });
  }
  const warmStart = performance.now();
  await closeAll(await connectAll(target, plan));
  const warmSeconds = (performance.now() - warmStart) / 1000;
  await sleep(SETTLE_MS);

  const heapBefore = (await target.collectGarbage?.()) ?? 0;
  const before = sampleTree(target.serverPids).rssKiB;
  const started = performance.now();
  const clients = await connectAll(target, plan);
  const connectSeconds = (performance.now() - started) / 1000;
  try {
    await sleep(SETTLE_MS);
    const heapAfter = (await target.collectGarbage?.()) ?? 0;
    const after = sampleTree(target.serverPids).rssKiB;
    return {
      rssBeforeMiB: round(before / 1024, 1),
      rssAfterMiB: round(after / 1024, 1),
      perSocketKiB: round((after - before) / clients.length, 1),
      jsHeapPerSocketKiB: round((heapAfter - heapBefore) / 1024 / clients.length, 1),
      warmUpConnectsPerSecond: round(clients.length / warmSeconds, 0),
      connectsPerSecond: round(clients.length / connectSeconds, 0),
    };
  } finally {
    await closeAll(clients);
  }
}
