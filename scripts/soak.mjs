// Soak and load on loopback against `wrangler dev`: many sockets over several conversations, a steady send
// rate for a bounded time, then proof that nothing was lost or repeated, that every socket saw one order,
// that REST history agrees, that no unexpected error frame came, and (in runs of 3 minutes or more) that
// the Worker isolate's JS heap stayed flat.
//
//   npm run soak                                   # quick: 200 sockets, 30 s (CI runs this)
//   npm run soak -- --sockets 1000 --minutes 10    # the full soak
//   options: --sockets N (≤ 2000) --seconds S | --minutes M (≤ 15) --rate R (messages/s, all conversations)
//            --per-conversation N (sockets per conversation, default 50) --port P (default: a free one)
//
// It starts its own server on 127.0.0.1 with a fresh temporary state directory and a random secret, and always
// stops it (its whole process group) at the end, on failure too. It talks to 127.0.0.1 only.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT } from "jose";
import { collectGarbage } from "../bench/lib/profiler.mjs";

const HOST = "127.0.0.1";
const MAX_SOCKETS = 2000;
const MAX_SECONDS = 15 * 60;

function options(argv) {
  const o = { sockets: 200, seconds: 30, rate: 20, perConversation: 50, port: 0 };
  for (let i = 0; i < argv.length; i++) {
    const [name, value] = [argv[i], Number(argv[i + 1])];
    const take = () => {
      if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} needs a positive number`);
      i++;
      return value;
    };
    if (name === "--sockets") o.sockets = take();
    else if (name === "--seconds") o.seconds = take();
    else if (name === "--minutes") o.seconds = take() * 60;
    else if (name === "--rate") o.rate = take();
    else if (name === "--per-conversation") o.perConversation = take();
    else if (name === "--port") o.port = take();
    else throw new Error(`unknown option ${name}`);
  }
  if (o.sockets > MAX_SOCKETS) throw new Error(`at most ${MAX_SOCKETS} sockets`);
  if (o.seconds > MAX_SECONDS) throw new Error(`at most ${MAX_SECONDS / 60} minutes`);
  // The room's limits: 10 sockets per user and conversation, a send bucket of 20 refilled 5/s per user.
  o.perConversation = Math.min(o.perConversation, o.sockets);
  return o;
}

const opts = options(process.argv.slice(2));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...args) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}]`, ...args);

// ---- The server ------------------------------------------------------------------------------------------

const stateDir = mkdtempSync(join(tmpdir(), "edge-chat-soak-"));
const secret = randomBytes(32).toString("hex");
let server;
let serverLog = "";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServer() {
  const wrangler = join("node_modules", ".bin", "wrangler");
  const migrate = spawnSync(wrangler, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", stateDir], {
    encoding: "utf8",
    env: { ...process.env, CI: "true" },
  });
  if (migrate.status !== 0) throw new Error(`migrations failed: ${migrate.stdout}\n${migrate.stderr}`);
  const port = opts.port || (await freePort());
  const inspector = await freePort();
  server = spawn(
    wrangler,
    [
      "dev",
      "--ip",
      HOST,
      "--port",
      String(port),
      "--inspector-port",
      String(inspector),
      "--persist-to",
      stateDir,
      "--var",
      `AUTH_SECRET:${secret}`,
      "--show-interactive-dev-session=false",
      "--log-level",
      "warn",
    ],
    // Its own process group, so that workerd and every helper go with it.
    { detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CI: "true" } },
  );
  for (const stream of [server.stdout, server.stderr]) {
    stream.on("data", (chunk) => {
      serverLog = (serverLog + chunk).slice(-20_000);
    });
  }
  const base = `http://${HOST}:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`wrangler dev exited: ${serverLog}`);
    try {
      const res = await fetch(`${base}/health`);
      if (res.ok) return { base, port, inspector };
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`wrangler dev did not come up: ${serverLog}`);
    await sleep(250);
  }
}

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const group = -server.pid;
  try {
    process.kill(group, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 50 && server.exitCode === null; i++) await sleep(100);
  try {
    process.kill(group, "SIGKILL");
  } catch {
    // gone
  }
}

let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  await stopServer();
  rmSync(stateDir, { recursive: true, force: true });
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    cleanup().finally(() => process.exit(130));
  });
}

/** Resident memory (KiB) of the server's workerd processes. */
function workerdRss() {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const pgrp = Number(fields[2]);
      if (pgrp !== server.pid) continue;
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (!comm.includes("workerd")) continue;
      const status = readFileSync(`/proc/${entry}/status`, "utf8");
      total += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

// ---- Clients ---------------------------------------------------------------------------------------------

const token = (userId) =>
  new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(userId)
    .setExpirationTime("2h")
    .sign(new TextEncoder().encode(secret));

async function api(base, method, path, userId, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${await token(userId)}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

class Client {
  constructor(conversation, userId) {
    this.conversation = conversation;
    this.userId = userId;
    /** seq → message id: message frames, and the acks of this socket's own sends */
    this.got = new Map();
    this.repeats = 0;
    this.outOfOrder = 0;
    this.lastMessageSeq = 0;
    this.errors = [];
    this.waiting = new Map();
    this.closed = null;
  }

  async open(base) {
    const issued = await api(base, "POST", `/v1/conversations/${this.conversation.id}/ticket`, this.userId);
    if (issued.status !== 201) throw new Error(`ticket: ${issued.status} ${JSON.stringify(issued.body)}`);
    const url = `ws://${HOST}:${new URL(base).port}/v1/conversations/${this.conversation.id}/ws?since=0&ticket=${issued.body.ticket}`;
    this.ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ready frame in 30 s")), 30_000);
      this.ws.addEventListener("error", () => reject(new Error("socket error before ready")));
      this.ws.addEventListener("message", (event) => {
        if (event.data === "pong") return;
        const frame = JSON.parse(event.data);
        if (frame.type === "ready") {
          clearTimeout(timer);
          resolve();
        }
        this.#frame(frame);
      });
    });
    this.ws.addEventListener("close", (event) => {
      this.closed = { code: event.code, reason: event.reason };
    });
  }

  #deliver(seq, id) {
    if (this.got.has(seq)) this.repeats++;
    this.got.set(seq, id);
  }

  #frame(frame) {
    switch (frame.type) {
      case "message":
        if (frame.message.seq <= this.lastMessageSeq) this.outOfOrder++;
        this.lastMessageSeq = frame.message.seq;
        this.#deliver(frame.message.seq, frame.message.id);
        break;
      case "ack": {
        this.#deliver(frame.message.seq, frame.message.id);
        this.waiting.get(frame.localId)?.({ ok: true, message: frame.message });
        this.waiting.delete(frame.localId);
        break;
      }
      case "error":
        this.errors.push(frame);
        if (frame.ref) {
          this.waiting.get(frame.ref)?.({ ok: false, error: frame });
          this.waiting.delete(frame.ref);
        }
        break;
      default:
        break;
    }
  }

  send(localId, content) {
    return new Promise((resolve) => {
      this.waiting.set(localId, resolve);
      this.ws.send(JSON.stringify({ type: "send", localId, content }));
    });
  }
}

// ---- Edge checks: what the HTTP layer does with a lying Content-Length -----------------------------------

/** A raw HTTP/1.1 request: the status and body of the answer, or a null status when none came. */
function rawRequest(port, head, body, { timeoutMs = 10_000 } = {}) {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, HOST);
    let answer = "";
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(answer);
      resolve({ status: match ? Number(match[1]) : null, body: answer.split("\r\n\r\n").slice(1).join("\r\n\r\n") });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on("connect", () => {
      socket.write(head + body);
      socket.end();
    });
    socket.on("data", (chunk) => {
      answer += chunk;
    });
    socket.on("error", done);
    socket.on("close", done);
  });
}

/** Is this the app's own error body (as opposed to a page of the local dev server in front of it)? */
function isAppError(body) {
  try {
    const parsed = JSON.parse(body);
    return typeof parsed?.error?.code === "string";
  } catch {
    return false;
  }
}

async function lyingContentLength(port, conversationId, bearer) {
  const body = JSON.stringify({ content: "lying", localId: "lying-length" });
  const head = (length) =>
    `POST /v1/conversations/${conversationId}/messages HTTP/1.1\r\nHost: ${HOST}:${port}\r\n` +
    `Authorization: Bearer ${bearer}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`;
  const results = {};
  // Shorter than the body: the server reads a cut JSON text.
  results.shorter = await rawRequest(port, head(10), body);
  // Longer than the body, then the client stops sending: the body never completes.
  results.longer = await rawRequest(port, head(body.length + 100), body);
  // Not a number.
  results.notANumber = await rawRequest(port, head("abc"), body);
  // Two different lengths.
  results.twoLengths = await rawRequest(
    port,
    head(body.length).replace("\r\n\r\n", `\r\nContent-Length: 5\r\n\r\n`),
    body,
  );
  return results;
}

// ---- The run ---------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  log(`starting wrangler dev on ${HOST} (state in ${stateDir})`);
  const { base, port, inspector } = await startServer();
  log(`up at ${base} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const failures = [];

  // Conversations of `perConversation` sockets, two sockets (devices) per user.
  const conversations = [];
  const clients = [];
  const conversationCount = Math.ceil(opts.sockets / opts.perConversation);
  for (let c = 0; c < conversationCount; c++) {
    const size = Math.min(opts.perConversation, opts.sockets - c * opts.perConversation);
    const users = Array.from({ length: Math.ceil(size / 2) }, (_, u) => `soak-c${c}-u${u}`);
    const created = await api(base, "POST", "/v1/conversations", users[0], {
      participantIds: users.slice(1),
      title: `soak ${c}`,
    });
    if (created.status !== 201) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
    const conversation = { id: created.body.id, users, clients: [], sent: 0 };
    conversations.push(conversation);
    for (let i = 0; i < size; i++) {
      const client = new Client(conversation, users[i % users.length]);
      conversation.clients.push(client);
      clients.push(client);
    }
  }
  // The app must answer a 4xx. A body that ends before its Content-Length never reaches the app under
  // `wrangler dev`: the dev server's own proxy fails it with a text 500 ("Network connection lost"), which is
  // reported here, not counted as the app's.
  const edge = await lyingContentLength(port, conversations[0].id, await token(conversations[0].users[0]));
  const devServer = [];
  for (const [name, result] of Object.entries(edge)) {
    if (result.status === null || result.status < 500) continue;
    if (isAppError(result.body)) failures.push(`lying Content-Length (${name}): the app answered ${result.status}`);
    else devServer.push(`${name}: ${result.status} from the dev server (${result.body.split("\n")[0]})`);
  }
  log(
    `lying Content-Length: ${JSON.stringify(Object.fromEntries(Object.entries(edge).map(([k, v]) => [k, v.status])))}`,
  );
  for (const note of devServer) log(`note: ${note}`);

  // Open the sockets, a few at a time.
  for (let i = 0; i < clients.length; i += 20) await Promise.all(clients.slice(i, i + 20).map((c) => c.open(base)));
  log(`${clients.length} sockets open over ${conversations.length} conversations`);

  // A steady rate: one send every 1000/rate ms, round-robin over conversations and their users' sockets;
  // one send in five goes over REST. Each user sends far below the 5/s refill of its bucket.
  const rss = [];
  const rssTimer = setInterval(
    () => rss.push({ t: Math.round((Date.now() - started) / 1000), kib: workerdRss() }),
    5_000,
  );
  rss.push({ t: Math.round((Date.now() - started) / 1000), kib: workerdRss() });
  // The isolate's JS heap after a full collection (the Worker and its Durable Objects share it): what the
  // product's own state costs, without the runtime's native memory.
  const heap = [];
  const sampleHeap = async () => {
    const bytes = await collectGarbage(inspector);
    if (bytes > 0) heap.push({ t: Math.round((Date.now() - started) / 1000), kib: bytes / 1024 });
  };
  await sampleHeap();
  // Every minute: the snapshot that forces the collection pauses the isolate for a moment.
  const heapTimer = setInterval(() => void sampleHeap(), 60_000);
  // Clients ping every 30 s as the README asks: the room closes a socket silent for two minutes.
  const pingTimer = setInterval(() => {
    for (const c of clients) if (!c.closed) c.ws.send("ping");
  }, 30_000);
  const interval = 1000 / opts.rate;
  const endAt = Date.now() + opts.seconds * 1000;
  const inFlight = new Set();
  const latencies = [];
  let n = 0;
  let refused = 0;
  let next = Date.now();
  while (Date.now() < endAt) {
    const conversation = conversations[n % conversations.length];
    const client = conversation.clients[Math.floor(n / conversations.length) % conversation.clients.length];
    const localId = `s${n}`;
    const content = `soak message ${n} from ${client.userId}`;
    const t0 = performance.now();
    // Per conversation, not per n: with 5 | conversations, n % 5 would put some conversations on REST only.
    const viaRest = Math.floor(n / conversations.length) % 5 === 4;
    const p = (
      viaRest
        ? api(base, "POST", `/v1/conversations/${conversation.id}/messages`, client.userId, { content, localId }).then(
            (r) => (r.status === 201 ? { ok: true } : { ok: false, error: r.body }),
          )
        : client.send(localId, content)
    ).then((result) => {
      latencies.push(performance.now() - t0);
      if (result.ok) conversation.sent++;
      else {
        refused++;
        failures.push(`send ${localId} refused: ${JSON.stringify(result.error)}`);
      }
      inFlight.delete(p);
    });
    inFlight.add(p);
    n++;
    next += interval;
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait);
  }
  await Promise.all(inFlight);
  log(`${n} messages sent (${refused} refused) in ${opts.seconds} s`);

  // Let the last broadcasts land, then check every socket against REST history.
  const deadline = Date.now() + 30_000;
  for (const conversation of conversations) {
    for (;;) {
      const behind = conversation.clients.filter((c) => c.got.size < conversation.sent && !c.closed);
      if (behind.length === 0 || Date.now() > deadline) break;
      await sleep(200);
    }
  }
  clearInterval(rssTimer);
  clearInterval(heapTimer);
  clearInterval(pingTimer);
  rss.push({ t: Math.round((Date.now() - started) / 1000), kib: workerdRss() });
  await sampleHeap();

  let deliveriesChecked = 0;
  for (const conversation of conversations) {
    const history = [];
    for (let after = 0; ; ) {
      const page = await api(
        base,
        "GET",
        `/v1/conversations/${conversation.id}/messages?after=${after}&limit=100`,
        conversation.users[0],
      );
      if (page.status !== 200) throw new Error(`history: ${page.status}`);
      history.push(...page.body.messages);
      if (!page.body.hasMore) break;
      after = page.body.messages.at(-1).seq;
    }
    const seqs = history.map((m) => m.seq);
    if (seqs.some((s, i) => s !== i + 1)) failures.push(`${conversation.id}: history seqs are not 1..${seqs.length}`);
    if (history.length !== conversation.sent)
      failures.push(`${conversation.id}: ${conversation.sent} acknowledged, ${history.length} in history`);
    const ids = new Map(history.map((m) => [m.seq, m.id]));
    for (const client of conversation.clients) {
      if (client.closed) failures.push(`${client.userId}: socket closed ${JSON.stringify(client.closed)}`);
      if (client.repeats) failures.push(`${client.userId}: ${client.repeats} messages given twice`);
      if (client.outOfOrder) failures.push(`${client.userId}: ${client.outOfOrder} messages out of order`);
      const unexpected = client.errors.filter((e) => e.code !== "rate_limited");
      if (unexpected.length) failures.push(`${client.userId}: error frames ${JSON.stringify(unexpected.slice(0, 3))}`);
      let missing = 0;
      for (const [seq, id] of ids) {
        if (client.got.get(seq) !== id) missing++;
        else deliveriesChecked++;
      }
      if (missing)
        failures.push(`${client.userId} in ${conversation.id}: ${missing} of ${ids.size} messages missing or wrong`);
      if (client.got.size !== ids.size)
        failures.push(`${client.userId}: got ${client.got.size}, history has ${ids.size}`);
    }
  }

  // Memory: after a warm-up (the first third), the last third's mean of the JS heap after collection may not
  // exceed the middle third's by more than 10 % + 4 MiB (a leak per message or per socket, or a growing
  // backlog, does not settle). A run under three minutes is mostly warm-up: its samples are printed, not
  // judged. workerd's RSS is reported, not judged: under `wrangler dev` it grows with every HTTP request,
  // for the bench Worker's no-op route too (bench/README.md), which is the local runtime, not this code.
  const third = (xs) => Math.max(1, Math.floor(xs.length / 3));
  const mean = (xs) => xs.reduce((a, b) => a + b.kib, 0) / Math.max(1, xs.length);
  const middle = mean(heap.slice(third(heap), 2 * third(heap)));
  const last = mean(heap.slice(2 * third(heap)));
  const judged = opts.seconds >= 180 && heap.length >= 4;
  const memoryFlat = judged ? last <= middle * 1.1 + 4 * 1024 : null;
  if (memoryFlat === false)
    failures.push(`the JS heap grew from ${Math.round(middle / 1024)} MiB to ${Math.round(last / 1024)} MiB`);
  if (opts.seconds >= 180 && heap.length < 4) failures.push(`only ${heap.length} heap samples: is the inspector up?`);

  for (const c of clients) c.ws?.close(1000, "soak over");
  // What a client meets when a socket ends, with Node's WebSocket and the ws package (scripts/wire-close.mjs).
  const wire = spawnSync(process.execPath, ["scripts/wire-close.mjs", base], {
    encoding: "utf8",
    timeout: 150_000,
    env: { ...process.env, WIRE_AUTH_SECRET: secret },
  });
  process.stdout.write(wire.stdout ?? "");
  if (wire.status !== 0) failures.push(`wire-close: exit ${wire.status} ${wire.stderr ?? ""}`);
  latencies.sort((a, b) => a - b);
  const pct = (p) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0);
  const summary = {
    sockets: clients.length,
    conversations: conversations.length,
    seconds: opts.seconds,
    rate: opts.rate,
    messagesSent: n,
    messagesAcknowledged: conversations.reduce((a, c) => a + c.sent, 0),
    deliveriesChecked,
    ackLatencyMs: { p50: pct(0.5), p99: pct(0.99), max: Math.round(latencies.at(-1) ?? 0) },
    workerdRssMiB: {
      start: Math.round((rss[0]?.kib ?? 0) / 1024),
      max: Math.round(Math.max(...rss.map((r) => r.kib)) / 1024),
      end: Math.round((rss.at(-1)?.kib ?? 0) / 1024),
    },
    memoryFlat,
    jsHeapMiB: heap.map((h) => Math.round((h.kib / 1024) * 10) / 10),
    workerdRssKiBPerMessage: Math.round(((rss.at(-1)?.kib ?? 0) - (rss[0]?.kib ?? 0)) / Math.max(1, n)),
    workerdRssSamplesMiB: rss.map((r) => Math.round(r.kib / 1024)),
    lyingContentLength: Object.fromEntries(Object.entries(edge).map(([k, v]) => [k, v.status])),
    devServerNotes: devServer.length,
    failures: failures.length,
  };
  console.log(`SOAK-FIGURES ${JSON.stringify(summary)}`);
  if (failures.length) {
    console.error(`soak failed:\n  ${failures.slice(0, 30).join("\n  ")}`);
    return 1;
  }
  log("soak passed");
  return 0;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error("soak failed:", err);
  if (serverLog) console.error(`last server output:\n${serverLog.slice(-3000)}`);
} finally {
  await cleanup();
}
process.exit(code);
