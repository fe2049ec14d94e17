// `--profile`: a V8 CPU profile of the Worker's isolate (the Worker and its Durable Objects) during a measured
// phase, through the inspector that `wrangler dev` serves, summarized as the functions with the most self time.
// The D1 work runs in workerd's native code and other services, so it shows as server CPU, not in the profile.
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";

/**
 * A DevTools protocol session with the Worker's isolate, or null when the inspector lists no target.
 * @param {number} inspectorPort
 */
async function inspect(inspectorPort) {
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) return null;
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  let id = 0;
  /** @type {Map<number, (result: any) => void>} */
  const waiting = new Map();
  ws.on("message", (data) => {
    const message = JSON.parse(data.toString());
    if (message.id !== undefined) waiting.get(message.id)?.(message.result ?? message.error);
  });
  return {
    /** @returns {Promise<any>} */
    call: (/** @type {string} */ method, params = {}) =>
      new Promise((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        ws.send(JSON.stringify({ id: n, method, params }));
      }),
    close: () => ws.close(),
  };
}

/** @param {number} inspectorPort */
export async function startProfile(inspectorPort) {
  const session = await inspect(inspectorPort);
  if (!session) throw new Error("no inspector target");
  const { call } = session;
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  await call("Profiler.start");
  return {
    /** Stops, writes the .cpuprofile to the temp folder, and returns the top functions by self time. */
    async stop(/** @type {string} */ name) {
      const { profile } = await call("Profiler.stop");
      session.close();
      const path = join(tmpdir(), `edge-chat-bench-${name}-${Date.now()}.cpuprofile`);
      writeFileSync(path, JSON.stringify(profile));
      return { path, top: topSelf(profile, 25) };
    },
  };
}

/** Self time per function (name and location), in % of the samples. */
function topSelf(/** @type {any} */ profile, /** @type {number} */ count) {
  /** @type {Map<number, any>} */
  const nodes = new Map(profile.nodes.map((/** @type {any} */ n) => [n.id, n]));
  /** @type {Map<string, number>} */
  const self = new Map();
  for (const sample of profile.samples) {
    const frame = nodes.get(sample)?.callFrame;
    const file = frame?.url ? frame.url.split("/").pop() : "";
    const key = `${frame?.functionName || "(anonymous)"} ${file}:${(frame?.lineNumber ?? 0) + 1}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  const total = profile.samples.length || 1;
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([fn, n]) => ({ fn, selfPercent: Math.round((1000 * n) / total) / 10 }));
}

/**
 * Makes the Worker's isolate collect all its garbage, then returns its JS heap in use (bytes), through the
 * inspector. workerd takes `HeapProfiler.collectGarbage` without acting on it (the heap in use stays where it
 * was), so this takes a heap snapshot, before which V8 always collects, and drops the snapshot's chunks.
 * Bounded: 0 if the inspector does not answer within 60 s.
 * @param {number} inspectorPort
 */
export async function collectGarbage(inspectorPort) {
  const session = await inspect(inspectorPort);
  if (!session) return 0;
  const { call } = session;
  try {
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 60_000));
    const done = (async () => {
      await call("HeapProfiler.enable");
      await call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
      await call("HeapProfiler.disable");
      return (await call("Runtime.getHeapUsage"))?.usedSize ?? 0;
    })();
    return (await Promise.race([done, timeout])) ?? 0;
  } finally {
    session.close();
  }
}
