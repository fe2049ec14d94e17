// `node scripts/wire-close.mjs [baseUrl]`: checks, against a running server on this machine (default
// http://127.0.0.1:8787, e.g. `npm start`), that a client sees the close event of every way a socket ends:
// closed by the server from an RPC (4403, a removed participant; once on a socket that has sent nothing yet,
// once after a `ping`), closed by the server in a socket event (1009, a text frame over MAX_FRAME_BYTES; 1003,
// a binary frame), and closed by the client. The inbox socket too: its live `conversation` frame arrives
// (a message into one of the user's conversations), a binary frame closes it with 1003, and a client close. A close event needs the TCP connection to end, not only the close
// frame to arrive: a client left in CLOSING (readyState 2) fails. Each case runs with Node's
// global WebSocket (ticket) and with the `ws` package (bearer header). Exits 1 if any close event does not
// arrive within 5 s with the expected code, 2 on a setup error. Loopback only; bounded in time.
import { existsSync } from "node:fs";
import { SignJWT } from "jose";
import WsWebSocket from "ws";
import { DEV_VARS, readDevVars } from "./dev-vars.mjs";

const CLOSE_WAIT_MS = 5_000;
const STEP_MS = 5_000;
const BIG_FRAME_CHARS = 40 * 1024; // over MAX_FRAME_BYTES (32 KiB)

const base = new URL(process.argv[2] ?? "http://127.0.0.1:8787");
if (!["127.0.0.1", "localhost", "[::1]"].includes(base.hostname)) {
  console.error(`wire-close: ${base.origin} is not loopback; refusing`);
  process.exit(2);
}
const wsBase = new URL(base);
wsBase.protocol = base.protocol === "https:" ? "wss:" : "ws:";
// The whole run, whatever hangs: a hard bound.
setTimeout(() => {
  console.error("wire-close: gave up after 120 s");
  process.exit(2);
}, 120_000).unref();

const run = Math.random().toString(36).slice(2, 8);
const alice = `wc-alice-${run}`;
const bob = `wc-bob-${run}`;

/** A token from the server's dev sign-in, else signed with .dev.vars as `npm run token` does. */
async function tokenFor(userId) {
  if (process.env.WIRE_AUTH_SECRET) return sign(userId, process.env.WIRE_AUTH_SECRET);
  const res = await fetch(new URL("/dev/token", base), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userId }),
    signal: AbortSignal.timeout(STEP_MS),
  });
  if (res.ok) return (await res.json()).token;
  if (!existsSync(DEV_VARS)) throw new Error(`POST /dev/token: ${res.status}, and no .dev.vars to sign with`);
  return sign(userId, readDevVars().AUTH_SECRET);
}

function sign(userId, secret) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(new TextEncoder().encode(secret));
}

async function api(token, method, path, body) {
  const res = await fetch(new URL(path, base), {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(STEP_MS),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Opens bob's socket (a conversation's, or his inbox) with one of the two clients; resolves once it is ready. */
async function connect(client, tokens, conversationId, kind = "conversation") {
  const inbox = kind === "inbox";
  const path = inbox ? "/v1/inbox/ws" : `/v1/conversations/${conversationId}/ws`;
  const ready = inbox ? "inbox_ready" : "ready";
  let socket;
  if (client === "global") {
    const ticketPath = inbox ? "/v1/inbox/ticket" : `/v1/conversations/${conversationId}/ticket`;
    const { ticket } = await api(tokens.bob, "POST", ticketPath);
    socket = new globalThis.WebSocket(new URL(`${path}?ticket=${encodeURIComponent(ticket)}`, wsBase));
    socket.binaryType = "arraybuffer";
  } else {
    socket = new WsWebSocket(new URL(path, wsBase), { headers: { Authorization: `Bearer ${tokens.bob}` } });
  }
  const closed = new Promise((resolve) => {
    socket.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason, at: performance.now() }));
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${client}: no ${ready} within ${STEP_MS} ms`)), STEP_MS);
    socket.addEventListener("message", (e) => {
      if (typeof e.data === "string" && e.data.startsWith("{") && JSON.parse(e.data).type === ready) {
        clearTimeout(timer);
        resolve();
      }
    });
    socket.addEventListener("error", () => {
      clearTimeout(timer);
      reject(new Error(`${client}: socket error before ${ready}`));
    });
  });
  return { socket, closed };
}

/** Alice writes into the conversation; bob's inbox socket must get its `conversation` frame, then closes. */
async function inboxFrame(socket, tokens, id) {
  const frame = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no inbox frame within ${STEP_MS} ms`)), STEP_MS);
    socket.addEventListener("message", (e) => {
      const data = typeof e.data === "string" && e.data.startsWith("{") ? JSON.parse(e.data) : null;
      if (data?.type === "conversation" && data.conversation.id === id && data.conversation.lastSeq === 1) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await api(tokens.alice, "POST", `/v1/conversations/${id}/messages`, { content: "to the inbox" });
  await frame;
  socket.close(4001, "got it");
}

const remove = (_socket, tokens, id) => api(tokens.alice, "DELETE", `/v1/conversations/${id}/participants/${bob}`);

/** Sends `ping` and waits for the runtime's `pong`: the socket has then carried a frame from the client. */
function pingPong(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no pong within ${STEP_MS} ms`)), STEP_MS);
    socket.addEventListener("message", (e) => {
      if (e.data === "pong") {
        clearTimeout(timer);
        resolve();
      }
    });
    socket.send("ping");
  });
}

const cases = [
  {
    // workerd 1.20261102 under wrangler dev: a hibernatable socket that has carried no frame from its client
    // never finishes a close started by the server (the close frame arrives; the TCP connection stays open
    // until the room hibernates). Nothing in the room changes it; the SDK sends a `ping` as soon as it is
    // open. Reported on every run, not counted, so that a runtime that fixes it shows up here.
    name: "4403 removed (server, from an RPC), no frame from the client before",
    expect: 4403,
    act: remove,
    runtimeDefect: true,
  },
  {
    name: "4403 removed (server, from an RPC), after a ping from the client",
    expect: 4403,
    act: async (socket, tokens, id) => {
      await pingPong(socket);
      await remove(socket, tokens, id);
    },
  },
  {
    name: "1009 frame too big (server, in webSocketMessage)",
    expect: 1009,
    act: (s) => s.send("x".repeat(BIG_FRAME_CHARS)),
  },
  {
    name: "1003 binary frame (server, in webSocketMessage)",
    expect: 1003,
    act: (s) => s.send(new Uint8Array([1, 2, 3])),
  },
  {
    name: "4429 a flood of typing frames (server, after 50 refusals of its bucket)",
    expect: 4429,
    act: (s) => {
      for (let i = 0; i < 200; i++) s.send(JSON.stringify({ type: "typing", typing: i % 2 === 0 }));
    },
  },
  { name: "4000 closed by the client", expect: 4000, act: (s) => s.close(4000, "bye") },
  { name: "inbox: a live conversation frame, then closed by the client", kind: "inbox", expect: 4001, act: inboxFrame },
  {
    name: "inbox: 1003 binary frame (server, in webSocketMessage)",
    kind: "inbox",
    expect: 1003,
    act: (s) => s.send(new Uint8Array([1, 2, 3])),
  },
  { name: "inbox: 4000 closed by the client", kind: "inbox", expect: 4000, act: (s) => s.close(4000, "bye") },
];

/** The status and body a WebSocket upgrade with this made-up ticket is refused with, through the real HTTP stack. */
function refusedUpgrade(path) {
  return new Promise((resolve, reject) => {
    const socket = new WsWebSocket(new URL(`${path}?ticket=made-up.ticket`, wsBase));
    socket.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    socket.on("open", () => reject(new Error(`${path}: a made-up ticket opened a socket`)));
    socket.on("error", () => {});
  });
}

/** A made-up ticket must be refused alike whatever the id: nothing tells whether a conversation exists. */
async function checkTicketOracle(tokens) {
  const real = await api(tokens.alice, "POST", "/v1/conversations", { participantIds: [bob], title: "oracle" });
  const answers = [];
  for (const path of [
    `/v1/conversations/${real.id}/ws`,
    "/v1/conversations/AAAAAAAAAAAAAAAAAAAAAA/ws",
    "/v1/conversations/x%20y/ws",
    "/v1/inbox/ws",
  ]) {
    answers.push({ path, ...(await refusedUpgrade(path)) });
  }
  const same = answers.every((a) => a.status === 401 && a.body === answers[0]?.body);
  console.log(
    `${same ? "ok  " : "FAIL"} made-up ticket: ${answers.map((a) => a.status).join(", ")} for an existing, unknown, malformed id and the inbox${same ? ", the same body" : `: ${JSON.stringify(answers)}`}`,
  );
  return same ? 0 : 1;
}

let failures = 0;
try {
  const tokens = { alice: await tokenFor(alice), bob: await tokenFor(bob) };
  console.log(`wire-close against ${base.origin} (users ${alice}, ${bob})`);
  failures += await checkTicketOracle(tokens);
  for (const client of ["global", "ws"]) {
    for (const c of cases) {
      const conversation = await api(tokens.alice, "POST", "/v1/conversations", {
        participantIds: [bob],
        title: `wire-close ${c.expect}`,
      });
      const { socket, closed } = await connect(client, tokens, conversation.id, c.kind);
      const start = performance.now();
      await c.act(socket, tokens, conversation.id);
      const timeout = new Promise((resolve) => setTimeout(() => resolve(null), CLOSE_WAIT_MS));
      const seen = await Promise.race([closed, timeout]);
      const label = `${client.padEnd(6)} ${c.name}`;
      if (seen && seen.code === c.expect) {
        console.log(`ok   ${label}: close ${seen.code} "${seen.reason}" after ${Math.round(seen.at - start)} ms`);
      } else {
        if (!c.runtimeDefect) failures++;
        const what = seen
          ? `close ${seen.code} "${seen.reason}", expected ${c.expect}`
          : `no close event within ${CLOSE_WAIT_MS} ms (readyState ${socket.readyState})`;
        console.log(`${c.runtimeDefect ? "KNOWN" : "FAIL"} ${label}: ${what}`);
      }
      if (client === "ws") socket.terminate();
      // A global WebSocket still CLOSING is left to be dropped when the process exits.
    }
  }
} catch (err) {
  console.error(`wire-close: setup failed: ${err.message}`);
  process.exit(2);
}
console.log(failures === 0 ? "all close events arrived" : `${failures} close event(s) missing or wrong`);
process.exit(failures === 0 ? 0 : 1);
