// History page latency against conversation size: conversations of 10^4, 10^5 and 10^6 messages, seeded straight
// into the local D1 with a recursive CTE (not through the API) before `wrangler dev` starts. The newest page and
// a deep page (keyset, `before` the middle) are read in turn across all sizes, so that drift hits all alike.
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
    seededBy: "wrangler d1 execute --file (recursive CTE), before wrangler dev starts",
    rows,
    p99Growth: { from: smallest, to: largest, ...growth },
  };
}
