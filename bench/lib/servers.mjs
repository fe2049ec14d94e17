// The servers under test: the product (with the FloorRoom reference in the same workerd) run the way
// `npm start` runs it, and the minimal Node `ws` broadcast server. Each lives in a process group of its own.
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, removeOnExit, runToEnd, sleep, startGroup } from "./proc.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../..");
const BENCH_CONFIG = join(ROOT, "bench/wrangler.bench.toml");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");

/** The `[vars]` of the product's wrangler.toml. */
export function productVars() {
  /** @type {Record<string, string>} */
  const vars = {};
  let inVars = false;
  for (const line of readFileSync(join(ROOT, "wrangler.toml"), "utf8").split("\n")) {
    const section = /^\s*\[+([^\]]+)\]+/.exec(line);
    if (section) {
      inVars = section[1]?.trim() === "vars";
      continue;
    }
    const entry = /^\s*([A-Z0-9_]+)\s*=\s*"([^"]*)"/.exec(line);
    if (inVars && entry?.[1]) vars[entry[1]] = entry[2] ?? "";
  }
  return vars;
}

/** Tables of the product's configuration that only serve the demo page. */
const DEMO_ONLY = new Set(["assets", "build"]);

/**
 * The product's wrangler.toml with `main` pointing elsewhere, the demo-only tables dropped, relative paths made
 * absolute (the file is written to a temporary folder), and bench/wrangler.bench.toml appended.
 * @param {string} main
 * @param {boolean} noBundle
 */
function benchConfig(main, noBundle) {
  const kept = [];
  let skipping = false;
  for (const line of readFileSync(join(ROOT, "wrangler.toml"), "utf8").split("\n")) {
    const header = /^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$/.exec(line);
    if (header) skipping = DEMO_ONLY.has(header[1] ?? "");
    if (!skipping) kept.push(line);
  }
  let text = kept.join("\n");
  if (!/^main\s*=/m.test(text)) throw new Error("wrangler.toml has no top-level `main = ...`");
  text = text.replace(/^main\s*=.*$/m, `main = ${JSON.stringify(main)}${noBundle ? "\nno_bundle = true" : ""}`);
  text = text.replace(
    /^(\s*migrations_dir\s*=\s*)"([^"]+)"/m,
    (_, key, dir) => `${key}${JSON.stringify(resolve(ROOT, dir))}`,
  );
  return `${text}\n\n# ---- bench/wrangler.bench.toml ----\n${readFileSync(BENCH_CONFIG, "utf8")}`;
}

/**
 * The product in `wrangler dev`, from a fresh temporary folder: the bench Worker is bundled once (so that edits
 * to src/ during a run cannot reload it), the migrations are applied, `seedSql` is executed straight into the
 * local D1, then `wrangler dev --persist-to <folder>` serves it on a free loopback port.
 * With `bundleFrom` (the `bundleDir` of a server started before), that bundle is copied instead of building
 * again: a second server of the same run runs the same code as the first, whatever src/ holds by then.
 * @param {{ vars: Record<string, string>, seedSql?: string, bundleFrom?: string }} options
 */
export async function startProduct(options) {
  const dir = mkdtempSync(join(tmpdir(), "edge-chat-bench-"));
  const folder = removeOnExit(dir);
  const secret = randomBytes(32).toString("hex");
  const env = { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", CI: "1" };
  const wrangler = (/** @type {string[]} */ args, /** @type {string} */ name) =>
    runToEnd(process.execPath, [WRANGLER, ...args], { cwd: ROOT, env, name });

  /** @type {ReturnType<typeof startGroup> | undefined} */
  let dev;
  try {
    const started = performance.now();
    const buildConfig = join(dir, "build.toml");
    writeFileSync(buildConfig, benchConfig(join(ROOT, "bench/worker.ts"), false));
    const state = join(dir, "state");
    let seedSeconds = 0;
    // The bundle, and meanwhile the database: the migrations, then the seed.
    const database = async () => {
      await wrangler(
        ["d1", "migrations", "apply", "DB", "--local", "--persist-to", state, "-c", buildConfig],
        "migrate",
      );
      if (!options.seedSql) return;
      const seedPath = join(dir, "seed.sql");
      writeFileSync(seedPath, options.seedSql);
      const seedStart = performance.now();
      await wrangler(
        ["d1", "execute", "DB", "--local", "--persist-to", state, "-c", buildConfig, "--file", seedPath],
        "seed",
      );
      seedSeconds = (performance.now() - seedStart) / 1000;
    };
    const bundleDir = join(dir, "bundle");
    const bundle = async () => {
      if (options.bundleFrom) cpSync(options.bundleFrom, bundleDir, { recursive: true });
      else await wrangler(["deploy", "--dry-run", "--outdir", bundleDir, "-c", buildConfig], "wrangler build");
    };
    await Promise.all([bundle(), database()]);
    const configPath = join(dir, "wrangler.toml");
    writeFileSync(configPath, benchConfig(join(dir, "bundle/worker.js"), true));

    const port = await freePort();
    const inspectorPort = await freePort();
    const vars = { ...productVars(), ...options.vars, AUTH_SECRET: secret };
    const args = [
      WRANGLER,
      "dev",
      "-c",
      configPath,
      "--persist-to",
      state,
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
    ];
    args.push("--inspector-port", String(inspectorPort), "--show-interactive-dev-session=false", "--log-level", "warn");
    for (const [key, value] of Object.entries(vars)) args.push("--var", `${key}:${value}`);
    dev = startGroup(process.execPath, args, { cwd: ROOT, env, name: "wrangler dev" });
    const base = `http://127.0.0.1:${port}`;
    await waitFor(`${base}/health`, dev, 90_000);
    const group = dev;
    return {
      base,
      ws: `ws://127.0.0.1:${port}`,
      port,
      inspectorPort,
      secret,
      pid: group.pid,
      bundleDir,
      startSeconds: (performance.now() - started) / 1000,
      seedSeconds,
      log: group.log,
      async stop() {
        await group.stop();
        folder.remove();
      },
    };
  } catch (err) {
    await dev?.stop();
    folder.remove();
    throw err;
  }
}

/** The minimal Node `ws` broadcast server (bench/node-ws-server.mjs) on a free loopback port. */
export async function startNodeWs() {
  const port = await freePort();
  const server = startGroup(process.execPath, ["--expose-gc", join(ROOT, "bench/node-ws-server.mjs"), String(port)], {
    cwd: ROOT,
    name: "node ws server",
  });
  try {
    await waitFor(`http://127.0.0.1:${port}/health`, server, 15_000);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return { ws: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}`, pid: server.pid, stop: () => server.stop() };
}

/**
 * @param {string} url
 * @param {{ exited: Promise<unknown>, log: string[], name: string }} group
 * @param {number} timeoutMs
 */
async function waitFor(url, group, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  let exited = false;
  group.exited.then(() => {
    exited = true;
  });
  while (performance.now() < deadline && !exited) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`${group.name} did not answer ${url}:\n${group.log.slice(-30).join("\n")}`);
}
