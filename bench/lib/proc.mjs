// Processes the bench starts: each in its own process group, pinned to a core where possible, stopped by its
// process-group id when done (also on error and on exit), and measured from /proc (CPU seconds, RSS).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism } from "node:os";

/** Process groups started by the bench and not yet stopped. */
const running = new Set();
/** Temporary folders to delete when the bench exits, however it exits. */
const folders = new Set();

/** Deletes `path` when the process exits, however it exits; `remove()` deletes it now. */
export function removeOnExit(/** @type {string} */ path) {
  folders.add(path);
  return {
    remove() {
      rmSync(path, { recursive: true, force: true });
      folders.delete(path);
    },
  };
}

function killAll() {
  for (const pgid of running) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  running.clear();
  for (const path of folders) rmSync(path, { recursive: true, force: true });
  folders.clear();
}
process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

const hasTaskset = (() => {
  try {
    execFileSync("taskset", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

/** Cores for the server side and for the load generator, when there are two to keep apart. */
export const pinning = {
  enabled: hasTaskset && availableParallelism() >= 2 && process.env.BENCH_NO_PIN !== "1",
  serverCore: 0,
  generatorCore: 1,
};

/** Pins every thread of this process (the load generator) to its core. */
export function pinSelf() {
  if (!pinning.enabled) return false;
  execFileSync("taskset", ["-a", "-cp", String(pinning.generatorCore), String(process.pid)], { stdio: "ignore" });
  return true;
}

/**
 * Starts a server-side command in a new process group, on the server core when pinning. Its output goes to
 * `log` (an array of lines kept for error messages).
 * @param {string} command
 * @param {string[]} args
 * @param {{ cwd?: string, env?: NodeJS.ProcessEnv, name: string, pin?: boolean }} options
 */
export function startGroup(command, args, options) {
  const [cmd, argv] =
    pinning.enabled && options.pin !== false
      ? ["taskset", ["-c", String(pinning.serverCore), command, ...args]]
      : [command, args];
  const child = spawn(cmd, argv, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (child.pid === undefined) throw new Error(`could not start ${options.name}`);
  const pgid = child.pid;
  running.add(pgid);
  /** @type {string[]} */
  const log = [];
  const keep = (/** @type {Buffer} */ chunk) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) log.push(line);
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    name: options.name,
    pid: pgid,
    log,
    exited,
    /** Stops the whole group: SIGTERM, then SIGKILL after `graceMs`. */
    async stop(graceMs = 5000) {
      if (!running.has(pgid)) return;
      try {
        process.kill(-pgid, "SIGTERM");
      } catch {
        // already gone
      }
      const timeout = new Promise((resolve) => setTimeout(resolve, graceMs, "timeout"));
      if ((await Promise.race([exited, timeout])) === "timeout" || groupAlive(pgid)) {
        try {
          process.kill(-pgid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      running.delete(pgid);
    },
  };
}

function groupAlive(/** @type {number} */ pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs a setup command to completion (not pinned: nothing is measured while it runs); throws with its output
 * when it fails.
 */
export async function runToEnd(/** @type {string} */ command, /** @type {string[]} */ args, options) {
  const group = startGroup(command, args, { ...options, pin: false });
  const { code, signal } = /** @type {{code: number|null, signal: string|null}} */ (await group.exited);
  await group.stop(1000);
  if (code !== 0) throw new Error(`${options.name} failed (${code ?? signal}):\n${group.log.slice(-30).join("\n")}`);
  return group.log;
}

/** A free TCP port on the loopback interface. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** @param {number} pid */
function statOf(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // Fields from 3 (state): ppid is 4, utime 14, stime 15.
    return { ppid: Number(rest[1]), cpuTicks: Number(rest[11]) + Number(rest[12]) };
  } catch {
    return null;
  }
}

/** @param {number} pid */
function rssKiB(pid) {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** The pid and every descendant of it. */
export function processTree(/** @type {number} */ root) {
  if (!existsSync("/proc")) return [root];
  /** @type {Map<number, number[]>} */
  const children = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = statOf(Number(entry));
    if (!stat) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(entry));
    children.set(stat.ppid, list);
  }
  const tree = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = /** @type {number} */ (queue.shift());
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/**
 * CPU seconds and resident memory of a process tree, as one sample.
 * @param {number[]} roots
 */
export function sampleTree(roots) {
  let ticks = 0;
  let rss = 0;
  for (const root of roots) {
    for (const pid of processTree(root)) {
      ticks += statOf(pid)?.cpuTicks ?? 0;
      rss += rssKiB(pid);
    }
  }
  return { cpuSeconds: ticks / CLOCK_TICKS, rssKiB: rss };
}

/** A short name for a process of the server side. */
function labelOf(/** @type {number} */ pid) {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const exe = (cmdline[0] ?? "").split("/").pop() ?? "";
    if (exe === "workerd")
      return cmdline.some((a) => a.startsWith("--inspector-addr")) ? "workerd-runtime" : "workerd-proxy";
    if (exe === "taskset") return "taskset";
    if (cmdline.some((a) => a.includes("wrangler"))) return "wrangler-node";
    return exe || String(pid);
  } catch {
    return String(pid);
  }
}

/** CPU seconds of every process of the trees, by label. */
function cpuByLabel(/** @type {number[]} */ roots) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const root of roots) {
    for (const pid of processTree(root)) {
      const label = labelOf(pid);
      out[label] = (out[label] ?? 0) + (statOf(pid)?.cpuTicks ?? 0) / CLOCK_TICKS;
    }
  }
  return out;
}

/**
 * Measures CPU of the server side (process trees) and of this process (the load generator) over a span.
 * @param {number[]} serverRoots
 */
export function cpuMeter(serverRoots) {
  const server0 = sampleTree(serverRoots).cpuSeconds;
  const byLabel0 = cpuByLabel(serverRoots);
  const generator0 = process.cpuUsage();
  const wall0 = performance.now();
  return () => {
    const wall = (performance.now() - wall0) / 1000;
    const generator = process.cpuUsage(generator0);
    const serverCpu = sampleTree(serverRoots).cpuSeconds - server0;
    const generatorCpu = (generator.user + generator.system) / 1e6;
    const byLabel = cpuByLabel(serverRoots);
    /** @type {Record<string, number>} */
    const serverByProcess = {};
    for (const [label, seconds] of Object.entries(byLabel)) {
      const used = seconds - (byLabel0[label] ?? 0);
      if (used >= 0.01) serverByProcess[label] = round(used, 2);
    }
    return {
      wallSeconds: round(wall, 2),
      serverCpuSeconds: round(serverCpu, 2),
      generatorCpuSeconds: round(generatorCpu, 2),
      serverCpuShare: round(serverCpu / wall, 2),
      generatorCpuShare: round(generatorCpu / wall, 2),
      serverByProcess,
    };
  };
}

export const round = (/** @type {number} */ value, digits = 1) => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

export const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits until the processes use under 5 % of a core over a second (at most 60 s); returns the seconds waited.
 * @param {number[]} pids
 */
export async function untilQuiet(pids) {
  const start = performance.now();
  while (performance.now() - start < 60_000) {
    const meter = cpuMeter(pids);
    await sleep(1000);
    if (meter().serverCpuShare < 0.05) break;
  }
  return round((performance.now() - start) / 1000, 1);
}
