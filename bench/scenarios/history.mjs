// History page latency against conversation size: conversations of 10^4, 10^5 and 10^6 messages, seeded straight
// into the local D1 with a recursive CTE (not through the API) before `wrangler dev` starts, as version 0.1 kept
// them (D1's `messages` table). Since 0.2 a conversation's messages live in its room's SQLite: a room whose
// storage is empty imports them from D1 on its first request (src/room/adopt.ts, pages of 500). So each
// conversation first gets one request, timed: the upgrade's import. Then the newest page and a deep page
// (keyset, `before` the middle), served from the room, are read in turn across all sizes, so that drift hits
// all alike.
import { request } from "node:http";
import { now } from "../lib/clients.mjs";
import { round } from "../lib/proc.mjs";
import { measureRest } from "../lib/rest.mjs";

export const HISTORY_SIZES = [10_000, 100_000, 1_000_000];
const PAGE = 50;
const BASE_TIME = 1_700_000_000_000;

/** @param {number} size */
const conversationId = (size) => `bench-history-${size}`;

/** SQL that creates one conversation per size, with `size` messages, two participants, and its last message. */
export function historySeedSql(/** @type {number[]} */ sizes) {
  return sizes
    .map((size) => {
      const id = conversationId(size);
      return `
INSERT INTO conversations (id, title, direct, created_by, created_at, updated_at, last_seq)
  VALUES ('${id}', 'history ${size}', 0, 'history-a', ${BASE_TIME}, ${BASE_TIME + size}, ${size});
INSERT INTO participants (conversation_id, user_id, role, joined_at, activity_at) VALUES
  ('${id}', 'history-a', 'owner', ${BASE_TIME}, ${BASE_TIME + size}),
  ('${id}', 'history-b', 'member', ${BASE_TIME}, ${BASE_TIME + size});
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${size})
INSERT INTO messages (id, conversation_id, seq, sender_id, content, local_id, created_at)
  SELECT '${id}-' || i, '${id}', i, CASE i % 2 WHEN 0 THEN 'history-a' ELSE 'history-b' END,
    'seeded message ' || i || ': about as long as a line of chat usually is, give or take a few words',
    'seed-' || i, ${BASE_TIME} + i
  FROM n;
UPDATE conversations SET last_message_sender_id = 'history-b', last_message_preview = 'seeded',
  last_message_at = ${BASE_TIME + size} WHERE id = '${id}';`;
    })
    .join("\n");
}

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ requests: number, sizes: number[] }} options
 */
export async function historyPages(ctx, { requests, sizes }) {
  // The first request of each conversation imports its 0.1 messages into the room: timed, one size at a time.
  /** @type {{ messages: number, firstRequestMs: number, messagesPerSecond: number }[]} */
  const imports = [];
  for (const size of [...sizes].sort((a, b) => a - b)) {
    const path = `/v1/conversations/${conversationId(size)}/messages?limit=${PAGE}`;
    const started = now();
    const res = await get(ctx.server.base, path, await ctx.product.tokens("history-a"), IMPORT_TIMEOUT_MS);
    const ms = now() - started;
    const first = res.status === 200 ? JSON.parse(res.body)?.messages?.[0]?.seq : undefined;
    if (first !== size)
      throw new Error(`importing ${size} messages: ${res.status}, newest seq ${first}: ${res.body.slice(0, 300)}`);
    imports.push({ messages: size, firstRequestMs: round(ms, 0), messagesPerSecond: round((size * 1000) / ms, 0) });
    ctx.log(`  ${size} messages: first request (the import) ${round(ms / 1000, 2)} s`);
  }
  const base = (/** @type {number} */ size) => `/v1/conversations/${conversationId(size)}/messages?limit=${PAGE}`;
  const page = (/** @type {number} */ first) => (/** @type {any} */ body) =>
    body?.messages?.length === PAGE && body.messages[0]?.seq === first;
  const kinds = [
    { size: 0, page: "floor", path: "/bench/noop", user: "history-a" },
    ...sizes.flatMap((size) => [
      { size, page: "newest", path: base(size), user: "history-a", check: page(size) },
      { size, page: "deep", path: `${base(size)}&before=${size / 2}`, user: "history-a", check: page(size / 2 - 1) },
    ]),
  ];
  const measured = await measureRest(ctx.product.api, kinds, requests);
  const rows = kinds.map((kind, k) => ({ messages: kind.size, page: kind.page, .../** @type {any} */ (measured[k]) }));
  const p99 = (/** @type {number} */ size, /** @type {string} */ which) =>
    rows.find((r) => r.messages === size && r.page === which)?.latencyMs.p99;
  const smallest = Math.min(...sizes);
  const largest = Math.max(...sizes);
  const growth = Object.fromEntries(
    ["newest", "deep"].map((which) => [which, round((p99(largest, which) ?? 0) / (p99(smallest, which) ?? 1), 2)]),
  );
  for (const r of rows) ctx.log(`  ${r.messages} ${r.page}: p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms`);
  return {
    pageSize: PAGE,
    requestsPerKind: requests,
    seededBy:
      "0.1-style rows in D1's messages table (wrangler d1 execute --file, recursive CTE, before wrangler dev starts), imported by each room on its first request",
    imports,
    rows,
    p99Growth: { from: smallest, to: largest, ...growth },
  };
}

/** The first request may import 10^6 messages: longer than fetch's own 300 s header timeout allows. */
const IMPORT_TIMEOUT_MS = 900_000;

/**
 * One GET with a bound on its time (node:http: fetch gives up on its own after 300 s without headers).
 * @param {string} base
 * @param {string} path
 * @param {string} token
 * @param {number} timeoutMs
 * @returns {Promise<{ status: number, body: string }>}
 */
function get(base, path, token, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { headers: { Authorization: `Bearer ${token}` } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer to ${path} within ${timeoutMs / 1000} s`)));
    req.on("error", reject);
    req.end();
  });
}
