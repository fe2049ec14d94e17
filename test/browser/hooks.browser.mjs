// The SDK's React hooks in a real browser (`npm run test:hooks`): a small app made of them (hooks-app.jsx,
// bundled here by esbuild, React in development mode and StrictMode) in Debian's Chromium, against a
// `wrangler dev` started here on 127.0.0.1. Two people, alice and bob, each in a browser context of their
// own. The page comes from a small HTTP server of this script, on 127.0.0.1 too (Chromium lets a page reach
// loopback only from loopback), and calls the API cross-origin, as an app on its own origin would. Checks: the conversation list updates when the other sends;
// a message shows pending at once, then stored, never twice (online, and across a time offline); typing
// shows and clears; ticks go delivered, then read; older pages load back in seq order. Prints one line per
// scenario and `N passed, M failed`; the server is stopped by its process group's id, the run bounded in time.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { build } from "esbuild";
import {
  assert,
  assertEqual,
  devToken,
  launchChromium,
  ROOT,
  restWith,
  runScenarios,
  startWranglerDev,
  until,
} from "./harness.mjs";

const RUN_TIMEOUT_MS = 180_000;
const SCENARIO_TIMEOUT_MS = 45_000;
const tmp = mkdtempSync(path.join(os.tmpdir(), "edge-chat-hooks-"));

let server;
let pages;
let browser;
const runTimer = setTimeout(() => {
  console.error(`The hooks test did not finish within ${RUN_TIMEOUT_MS / 1000} s; kept: ${tmp}`);
  server?.kill("SIGKILL");
  process.exit(1);
}, RUN_TIMEOUT_MS);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server?.kill("SIGKILL");
    process.exit(130);
  });
}

async function bundleApp() {
  const result = await build({
    entryPoints: [path.join(ROOT, "test", "browser", "hooks-app.jsx")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

const HTML = `<!doctype html><html><head><meta charset="utf-8"><title>hooks</title></head>
<body><div id="root"></div><script type="module" src="/app.js"></script></body></html>`;

/** Serves the page and its script on 127.0.0.1; resolves with the server and its origin. */
function servePage(script) {
  const page = http.createServer((req, res) => {
    const asset = req.url === "/app.js";
    res.writeHead(200, { "Content-Type": asset ? "text/javascript" : "text/html", "Cache-Control": "no-store" });
    res.end(asset ? script : HTML);
  });
  return new Promise((resolve, reject) => {
    page.once("error", reject);
    page.listen(0, "127.0.0.1", () => resolve({ page, origin: `http://127.0.0.1:${page.address().port}` }));
  });
}

// ---- People and pages -----------------------------------------------------------------------------------

const state = { base: "", pageOrigin: "", people: {} };
/** Uncaught errors and console errors of the pages (React reports misuse of its hooks there). */
const pageErrors = [];
/** The browser's own lines for requests that failed because a page was offline. */
const NETWORK_NOISE = /Failed to load resource|ERR_INTERNET_DISCONNECTED|WebSocket connection to/;

async function person(name) {
  const token = await devToken(state.base, name);
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !NETWORK_NOISE.test(message.text()))
      pageErrors.push(`${name}: ${message.text()}`);
  });
  const listLoads = [];
  page.on("request", (request) => {
    if (request.method() === "GET" && new URL(request.url()).pathname === "/v1/conversations")
      listLoads.push(Date.now());
  });
  return { name, token, context, page, rest: restWith(state.base, token), listLoads };
}

async function openApp(who) {
  const fragment = new URLSearchParams({ api: state.base, token: who.token });
  await who.page.goto(`${state.pageOrigin}/#${fragment}`);
  await who.page.waitForSelector('#list[data-loaded="true"][data-status="open"]');
}

async function openConversation(who, id) {
  await who.page.click(`#list li[data-id="${id}"] button`);
  await who.page.waitForSelector(`#chat[data-id="${id}"][data-loaded="true"][data-status="open"]`);
}

const listItems = (who) =>
  who.page.$$eval("#list li", (items) =>
    items.map((li) => ({
      id: li.dataset.id,
      unread: Number(li.dataset.unread),
      preview: li.querySelector(".preview")?.textContent ?? "",
    })),
  );
const shown = (who) =>
  who.page.$$eval("#messages li", (items) =>
    items.map((li) => ({
      content: li.textContent,
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      pending: li.classList.contains("pending"),
      state: li.dataset.state ?? null,
      tick: li.dataset.tick ?? null,
    })),
  );
const tickOf = async (who, content) => (await shown(who)).find((m) => m.content === content && !m.pending)?.tick;
const text = (who, selector) => who.page.$eval(selector, (el) => el.textContent);

async function send(who, content) {
  await who.page.fill("#draft", content);
  await who.page.press("#draft", "Enter");
}

/** Asserts that from its first appearance on, every committed state showed `content` exactly once. */
async function assertShownOnce(who, content) {
  const commits = await who.page.evaluate(() => window.commits);
  const count = (c) => c.stored.filter((s) => s === content).length + c.pending.filter(([s]) => s === content).length;
  const first = commits.findIndex((c) => count(c) > 0);
  assert(first >= 0, `${content} was never shown`);
  const counts = commits.slice(first).map(count);
  assert(
    counts.every((n) => n === 1),
    `${who.name} showed "${content}" ${JSON.stringify(counts)} times per commit`,
  );
  assert(
    commits[first].pending.some(([s]) => s === content) && !commits[first].stored.includes(content),
    `"${content}" was not shown pending first`,
  );
  assert(commits.at(-1).stored.includes(content), `"${content}" is not shown stored at the end`);
}

// ---- The scenarios --------------------------------------------------------------------------------------

const ids = {};

const scenarios = [
  [
    "the conversation list updates live when the other one sends: moved up, unread count, preview, no reload",
    async () => {
      const { alice, bob } = state.people;
      ids.lunch = (await alice.rest("POST", "/v1/conversations", { participantIds: ["bob"], title: "Lunch" })).id;
      ids.other = (await alice.rest("POST", "/v1/conversations", { participantIds: ["bob"], title: "Other" })).id;
      await openApp(bob);
      await until("bob's list", async () => (await listItems(bob)).length === 2);
      // One load per store made (StrictMode makes and closes one more in development); none after that.
      const loads = bob.listLoads.length;
      assertEqual(
        (await listItems(bob)).map((c) => c.id),
        [ids.other, ids.lunch],
        "bob's list, newest first",
      );
      await alice.rest("POST", `/v1/conversations/${ids.lunch}/messages`, { content: "hello bob" });
      await until("Lunch to move up in bob's list", async () => (await listItems(bob))[0]?.id === ids.lunch, 5_000);
      assertEqual((await listItems(bob))[0], { id: ids.lunch, unread: 1, preview: "hello bob" }, "Lunch in bob's list");
      assertEqual(await text(bob, "#unread-total"), "1", "bob's unread total");
      assertEqual(bob.listLoads.length, loads, "list loads by bob's page after it loaded");
    },
  ],
  [
    "a message sent shows at once as pending, then stored, and never twice",
    async () => {
      const { alice, bob } = state.people;
      await openApp(alice);
      await openConversation(alice, ids.lunch);
      await send(alice, "Noon?");
      await until("Noon? stored", async () => (await shown(alice)).some((m) => m.content === "Noon?" && m.seq));
      await assertShownOnce(alice, "Noon?");

      // Offline, it stays pending; back online it goes out once.
      await alice.context.setOffline(true);
      await until("alice's socket to drop", async () => (await alice.page.$('#chat[data-status="open"]')) === null);
      await send(alice, "sent while offline");
      await until("the pending message", async () =>
        (await shown(alice)).some((m) => m.content === "sent while offline" && m.pending),
      );
      await new Promise((r) => setTimeout(r, 1_000));
      const offline = (await shown(alice)).filter((m) => m.content === "sent while offline");
      assertEqual(
        offline,
        [{ content: "sent while offline", seq: null, pending: true, state: "queued", tick: null }],
        "offline",
      );
      await alice.context.setOffline(false);
      await until(
        "the message stored after going online",
        async () => (await shown(alice)).some((m) => m.content === "sent while offline" && m.seq !== null),
        15_000,
      );
      await assertShownOnce(alice, "sent while offline");
      const history = await bob.rest("GET", `/v1/conversations/${ids.lunch}/messages?limit=10`);
      assertEqual(
        history.messages.map((m) => m.content).filter((c) => c === "sent while offline"),
        ["sent while offline"],
        "REST history",
      );
    },
  ],
  [
    "typing shows at the other one's page and clears when the message is sent; presence too",
    async () => {
      const { alice, bob } = state.people;
      await openConversation(bob, ids.lunch);
      await until("alice online at bob's", async () => (await text(bob, "#online")).split(" ").includes("alice"));
      await alice.page.type("#draft", "On my way", { delay: 30 });
      await until("alice typing at bob's", async () => (await text(bob, "#typing")) === "alice typing", 5_000);
      assertEqual(await text(alice, "#typing"), "", "one's own typing");
      await alice.page.press("#draft", "Enter");
      await until("the typing to clear", async () => (await text(bob, "#typing")) === "", 5_000);
    },
  ],
  [
    "read ticks: delivered while the other one has it open, read once they read it",
    async () => {
      const { alice, bob } = state.people;
      await bob.page.uncheck("#auto-read");
      await send(alice, "tick?");
      await until("delivered", async () => (await tickOf(alice, "tick?")) === "delivered", 5_000);
      await new Promise((r) => setTimeout(r, 500));
      assertEqual(await tickOf(alice, "tick?"), "delivered", "the tick before bob reads");
      await bob.page.check("#auto-read");
      await until("read", async () => (await tickOf(alice, "tick?")) === "read", 5_000);
      assertEqual(await tickOf(alice, "On my way"), "read", "the tick of an earlier message");
      await until("bob's unread total to be 0", async () => (await text(bob, "#unread-total")) === "0", 5_000);
    },
  ],
  [
    "older pages load backwards, in seq order, each message once",
    async () => {
      const { alice, bob } = state.people;
      const id = (await bob.rest("POST", "/v1/conversations", { participantIds: ["alice"], title: "History" })).id;
      for (let i = 1; i <= 25; i++) await bob.rest("POST", `/v1/conversations/${id}/messages`, { content: `h${i}` });
      await until("History in alice's list", async () => (await listItems(alice)).some((c) => c.id === id), 5_000);
      await openConversation(alice, id);
      assertEqual((await shown(alice)).length, 10, "the first page");
      for (const count of [20, 25]) {
        await alice.page.click("#older");
        await until(`${count} messages shown`, async () => (await shown(alice)).length === count);
      }
      assert((await alice.page.$("#older")) === null, "no older page is offered after the first message");
      assertEqual(
        (await shown(alice)).map((m) => m.seq),
        Array.from({ length: 25 }, (_, i) => i + 1),
        "the seqs shown",
      );
    },
  ],
];

// ---- The run --------------------------------------------------------------------------------------------

let result = { passed: 0, failed: scenarios.length };
try {
  let script;
  [server, script] = await Promise.all([startWranglerDev(tmp), bundleApp()]);
  state.base = server.base;
  ({ page: pages, origin: state.pageOrigin } = await servePage(script));
  browser = await launchChromium();
  state.people = { alice: await person("alice"), bob: await person("bob") };
  result = await runScenarios(scenarios, {
    timeoutMs: SCENARIO_TIMEOUT_MS,
    onFailure: async (index) => {
      for (const who of Object.values(state.people)) {
        await who.page.screenshot({ path: path.join(tmp, `failed-${index + 1}-${who.name}.png`) });
      }
    },
  });
  if (pageErrors.length > 0) {
    result.failed++;
    console.log(`not ok - errors in the pages:\n  ${pageErrors.join("\n  ")}`);
  }
} catch (error) {
  console.log(`not ok - setup: ${String(error?.stack ?? error)}`);
} finally {
  await browser?.close().catch(() => {});
  pages?.closeAllConnections();
  pages?.close();
  await server?.stop();
  clearTimeout(runTimer);
}

if (result.failed > 0) {
  console.log(`# kept for a look: ${tmp} (server log, screenshots of failed scenarios)`);
  try {
    console.log(`# server log, last lines:\n${readFileSync(server.log, "utf8").split("\n").slice(-20).join("\n")}`);
  } catch {
    // no log
  }
} else {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`${result.passed} passed, ${result.failed} failed`);
process.exit(result.failed > 0 ? 1 : 0);
