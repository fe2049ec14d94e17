// What a browser test of this repository needs around its scenarios: `wrangler dev` on 127.0.0.1 with a fresh
// local D1 and a random secret (stopped by its process group's id, always), Debian's Chromium through
// playwright-core, dev tokens and REST calls from outside the page, polling and assertions, and a run of
// scenarios each bounded in time. Used by chat.browser.mjs and hooks.browser.mjs.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { openSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BIN = path.join(ROOT, "node_modules", ".bin");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Tools on the project's Node 22 (the `node` dev dependency), whatever Node runs the test. */
const childEnv = {
  ...process.env,
  PATH: `${BIN}${path.delimiter}${process.env.PATH ?? ""}`,
  WRANGLER_SEND_METRICS: "false",
  NO_COLOR: "1",
  CI: "1",
};

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts `wrangler dev` on loopback with its state, env file and log in `dir`, sign-in by name on. Resolves
 * once `/health` answers, with its origin and `stop()`. Its process group is killed when this process exits,
 * however it exits.
 */
export async function startWranglerDev(dir) {
  const persist = path.join(dir, "state");
  const log = path.join(dir, "wrangler.log");
  const migrate = spawnSync(
    path.join(BIN, "wrangler"),
    ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persist],
    { cwd: ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", timeout: 90_000 },
  );
  if (migrate.status !== 0) {
    throw new Error(`migrations failed (${migrate.status ?? migrate.signal}):\n${migrate.stdout}\n${migrate.stderr}`);
  }
  // An env file of its own, so a developer's .dev.vars does not change what is tested.
  const envFile = path.join(dir, "browser-test.env");
  writeFileSync(envFile, "# Variables come from --var.\n");
  const [port, inspectorPort] = [await freePort(), await freePort()];
  const out = openSync(log, "a");
  const child = spawn(
    path.join(BIN, "wrangler"),
    [
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      String(inspectorPort),
      "--persist-to",
      persist,
      "--env-file",
      envFile,
      "--var",
      `AUTH_SECRET:${randomBytes(32).toString("base64url")}`,
      "--var",
      "DEV_AUTH:1",
      "--show-interactive-dev-session=false",
    ],
    // Its own process group, so that stopping it stops workerd and the build too.
    { cwd: ROOT, env: childEnv, stdio: ["ignore", out, out], detached: true },
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  const kill = (signal) => {
    if (!running()) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  process.on("exit", () => kill("SIGKILL"));
  const server = {
    base: `http://127.0.0.1:${port}`,
    log,
    pid: child.pid,
    kill,
    async stop() {
      if (!running()) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      kill("SIGTERM");
      await Promise.race([exited, sleep(5_000)]);
      kill("SIGKILL");
    },
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (!running()) throw new Error(`wrangler dev exited with ${child.exitCode ?? child.signalCode}; log: ${log}`);
    try {
      if ((await fetch(`${server.base}/health`)).ok) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`wrangler dev did not answer /health within 90 s; log: ${log}`);
    }
    await sleep(250);
  }
}

export const launchChromium = () => chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });

/** Polls `check` until it returns a truthy value; fails after `timeoutMs` with `what`. */
export async function until(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

export function assertEqual(actual, expected, what) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

/** A dev token of `userId` (the server signs it: DEV_AUTH is on). */
export async function devToken(base, userId) {
  const res = await fetch(`${base}/dev/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userId }),
  });
  assert(res.ok, `POST /dev/token answered ${res.status}`);
  return (await res.json()).token;
}

/** REST calls as the holder of `token`, from outside the page; a 429 is waited out. */
export function restWith(base, token) {
  return async (method, route, body) => {
    for (;;) {
      const response = await fetch(`${base}${route}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 429) {
        await sleep(Number(response.headers.get("Retry-After") ?? 1) * 1000);
        continue;
      }
      const json = response.status === 204 ? undefined : await response.json();
      assert(response.ok, `${method} ${route} answered ${response.status}: ${JSON.stringify(json)}`);
      return json;
    }
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Runs `[name, fn]` scenarios in order, each within `timeoutMs`; prints TAP-like lines and returns the
 * counts. Around each one, by its index: `begin` before it starts; `settle` once it has ended or timed out,
 * whatever its outcome; `check` after one that passed, failing it by throwing (no console errors meanwhile,
 * say); `onFailure` after a failed one (screenshots, say).
 */
export async function runScenarios(
  scenarios,
  { timeoutMs, begin = () => {}, settle = () => {}, check = async () => {}, onFailure = async () => {} },
) {
  let passed = 0;
  let failed = 0;
  for (const [index, [name, run]] of scenarios.entries()) {
    const startedAt = Date.now();
    begin(index);
    try {
      await withTimeout(run(), timeoutMs, "the scenario").finally(() => settle(index));
      await check(index);
      passed++;
      console.log(`ok ${index + 1} - ${name} (${Date.now() - startedAt} ms)`);
    } catch (error) {
      failed++;
      console.log(`not ok ${index + 1} - ${name}\n  ${String(error?.stack ?? error).replace(/\n/g, "\n  ")}`);
      await onFailure(index).catch(() => {});
    }
  }
  return { passed, failed };
}
