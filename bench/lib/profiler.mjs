// `--profile`: a V8 CPU profile of the Worker's isolate (the Worker and its Durable Objects) during a measured
// phase, through the inspector that `wrangler dev` serves, summarized as the functions with the most self time.
// The D1 work runs in workerd's native code and other services, so it shows as server CPU, not in the profile.
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";

/** @param {number} inspectorPort */
export async function startProfile(inspectorPort) {
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) throw new Error("no inspector target");
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
  const call = (/** @type {string} */ method, params = {}) =>
    new Promise((resolve) => {
      const n = ++id;
      waiting.set(n, resolve);
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  await call("Profiler.start");
  return {
    /** Stops, writes the .cpuprofile to the temp folder, and returns the top functions by self time. */
    async stop(/** @type {string} */ name) {
      const { profile } = /** @type {any} */ (await call("Profiler.stop"));
      ws.close();
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
 * Asks the Worker's isolate for a full garbage collection through the inspector, then returns its JS heap in
 * use (bytes). workerd does not answer `HeapProfiler.collectGarbage`, so it is sent without waiting for a reply;
 * `Runtime.getHeapUsage` is answered. Memory is sampled after it, so that when the last collection ran decides
 * less of the result. Bounded: 0 if the inspector does not answer within 5 s.
 * @param {number} inspectorPort
 */
export async function collectGarbage(inspectorPort) {
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) return 0;
  const ws = new WebSocket(url, { perMessageDeflate: false });
  try {
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    ws.send(JSON.stringify({ id: 1, method: "HeapProfiler.collectGarbage" }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(0), 5000);
      ws.on("message", (data) => {
        const message = JSON.parse(data.toString());
        if (message.id !== 2) return;
        clearTimeout(timer);
        resolve(message.result?.usedSize ?? 0);
      });
      ws.send(JSON.stringify({ id: 2, method: "Runtime.getHeapUsage" }));
    });
  } finally {
    ws.close();
  }
}
