// The load generator's side: who to connect to (the product, the floor Durable Object, the Node ws server),
// WebSocket clients that check order on every frame, REST calls, and tokens signed with the run's secret.
import { SignJWT } from "jose";
import WebSocket from "ws";
import { collectGarbage } from "./profiler.mjs";

/** The clock of the load generator, in milliseconds (one process, so sender and receivers share it). */
export const now = () => performance.now();

/**
 * @typedef {object} Target
 * @property {"ours" | "floor" | "node-ws"} name
 * @property {(users: string[]) => Promise<string>} room a conversation (or a floor room) with these users in it
 * @property {(room: string, user: string, since?: number) => Promise<{ url: string, headers: Record<string, string> }>} endpoint
 * @property {number[]} serverPids the process groups whose CPU is the server side
 * @property {() => Promise<number>} [collectGarbage] a full GC of the server's JS, then its heap in use (bytes)
 */

/** @param {{ base: string, ws: string, secret: string, pid: number, inspectorPort: number }} server */
export function productTargets(server) {
  const collect = () => collectGarbage(server.inspectorPort);
  const tokens = tokenCache(server.secret);
  const api = restClient(server.base, tokens);
  /** @type {Target} */
  const ours = {
    name: "ours",
    async room(users) {
      const [owner, ...others] = users;
      if (!owner) throw new Error("a room needs users");
      const res = await api("POST", "/v1/conversations", owner, { participantIds: others });
      if (res.status !== 201) throw new Error(`creating a conversation: ${res.status} ${JSON.stringify(res.body)}`);
      return /** @type {{id: string}} */ (res.body).id;
    },
    async endpoint(room, user, since) {
      const query = since === undefined ? "" : `?since=${since}`;
      return {
        url: `${server.ws}/v1/conversations/${room}/ws${query}`,
        headers: { Authorization: `Bearer ${await tokens(user)}` },
      };
    },
    serverPids: [server.pid],
    collectGarbage: collect,
  };
  let rooms = 0;
  /** @type {Target} */
  const floor = {
    name: "floor",
    room: async () => `floor-${process.pid}-${rooms++}`,
    endpoint: async (room, user) => ({
      url: `${server.ws}/bench/floor/${room}/ws?user=${encodeURIComponent(user)}`,
      headers: {},
    }),
    serverPids: [server.pid],
    collectGarbage: collect,
  };
  return { ours, floor, api, tokens };
}

/** @param {{ ws: string, http?: string, pid: number }} server */
export function nodeWsTarget(server) {
  let rooms = 0;
  /** @type {Target} */
  const target = {
    name: "node-ws",
    room: async () => `room-${rooms++}`,
    endpoint: async (room, user) => ({
      url: `${server.ws}/floor/${room}/ws?user=${encodeURIComponent(user)}`,
      headers: {},
    }),
    serverPids: [server.pid],
    collectGarbage: async () => (await (await fetch(`${server.http}/gc`)).json()).usedSize ?? 0,
  };
  return target;
}

/** Tokens for the run's secret, one per user, signed once. */
export function tokenCache(/** @type {string} */ secret) {
  const key = new TextEncoder().encode(secret);
  /** @type {Map<string, Promise<string>>} */
  const cache = new Map();
  return (/** @type {string} */ user) => {
    let token = cache.get(user);
    if (!token) {
      const issuedAt = Math.floor(Date.now() / 1000);
      token = new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(user)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + 4 * 3600)
        .sign(key);
      cache.set(user, token);
    }
    return token;
  };
}

/**
 * REST calls with keep-alive; returns status, parsed body, headers and the time taken (ms).
 * @param {string} base
 * @param {(user: string) => Promise<string>} tokens
 */
export function restClient(base, tokens) {
  /**
   * @param {string} method
   * @param {string} path
   * @param {string} user
   * @param {unknown} [body]
   */
  return async (method, path, user, body) => {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${await tokens(user)}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const started = now();
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const ms = now() - started;
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers, ms };
  };
}

/**
 * One WebSocket client. Every `message`/`ack` frame is checked against the seq before it (it must grow) and
 * handed to the current `run`, if any. Other frames are counted.
 */
export class Client {
  /** @type {WebSocket} */
  ws;
  lastSeq = 0;
  orderViolations = 0;
  /** @type {Record<string, number>} */
  frames = {};
  /** @type {{ onFrame: (client: Client, frame: any, at: number) => void } | null} */
  run = null;
  /** @type {any} */
  ready = null;
  readyAt = 0;
  /** @type {Promise<Client>} */
  opened;
  /** @type {Promise<void>} */
  closed;
  closeCode = 0;
  /** @type {any[]} */
  errors = [];
  /** @type {(() => void) | undefined} */
  readyResolve;
  /** @type {((err: Error) => void) | undefined} */
  readyReject;

  /**
   * @param {{ url: string, headers: Record<string, string> }} endpoint
   * @param {string} user
   * @param {number} [index]
   */
  constructor(endpoint, user, index = 0) {
    this.user = user;
    this.index = index;
    this.ws = new WebSocket(endpoint.url, { headers: endpoint.headers, perMessageDeflate: false });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (/** @type {Buffer} */ chunk) => {
          text += chunk.toString();
        });
        res.on("end", () => reject(new Error(`upgrade refused: ${res.statusCode} ${text}`)));
      });
      this.ws.once("error", reject);
      this.readyResolve = () => resolve(this);
      this.readyReject = reject;
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closeCode = code;
        if (!this.ready) this.readyReject?.(new Error(`closed before ready: ${code} ${reason.toString()}`));
        resolve();
      });
    });
    this.ws.on("error", () => {});
    this.ws.on("message", (data) => this.#onMessage(data.toString()));
  }

  /** @param {string} text */
  #onMessage(text) {
    const at = now();
    const frame = JSON.parse(text);
    this.frames[frame.type] = (this.frames[frame.type] ?? 0) + 1;
    if (frame.type === "ready") {
      this.ready = frame;
      this.readyAt = at;
      this.readyResolve?.();
      return;
    }
    if (frame.type === "message" || frame.type === "ack") {
      const seq = frame.message.seq;
      if (seq <= this.lastSeq) this.orderViolations++;
      else this.lastSeq = seq;
    }
    if (frame.type === "error" && this.errors.length < 5) this.errors.push(frame);
    this.run?.onFrame(this, frame, at);
  }

  /** @param {unknown} frame */
  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    return this.closed;
  }
}

/**
 * Opens clients for (room, user) pairs, at most `concurrency` handshakes at a time, and waits for every `ready`.
 * @param {Target} target
 * @param {{ room: string, user: string, since?: number }[]} plan
 * @param {number} [concurrency]
 */
export async function connectAll(target, plan, concurrency = 64) {
  /** @type {Client[]} */
  const clients = new Array(plan.length);
  let next = 0;
  const worker = async () => {
    while (next < plan.length) {
      const i = next++;
      const item = /** @type {{ room: string, user: string, since?: number }} */ (plan[i]);
      const client = new Client(await target.endpoint(item.room, item.user, item.since), item.user, i);
      clients[i] = client;
      await client.opened;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, plan.length) }, worker));
  } catch (err) {
    await closeAll(clients.filter(Boolean));
    throw err;
  }
  return clients;
}

/** Closes clients and waits for their close handshakes (bounded). */
export async function closeAll(/** @type {Client[]} */ clients, timeoutMs = 15_000) {
  const all = Promise.all(clients.map((c) => c.close()));
  const timer = new Promise((resolve) => setTimeout(resolve, timeoutMs));
  await Promise.race([all, timer]);
  for (const c of clients) if (c.ws.readyState !== WebSocket.CLOSED) c.ws.terminate();
}

/** `count` user ids with a prefix unique to this run. */
export const users = (/** @type {string} */ prefix, /** @type {number} */ count) =>
  Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
