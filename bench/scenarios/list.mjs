// Conversation list latency and D1 round trips for users in 10, 100 and 1000 conversations, seeded straight into
// the local D1 before `wrangler dev` starts. The bench Worker counts the D1 round trips of each request and
// returns them in a header; a list that did one query per conversation would show it here.
import { measureRest } from "../lib/rest.mjs";

export const LIST_SIZES = [10, 100, 1000];
const BASE_TIME = 1_710_000_000_000;
const PEERS = 37;

const userOf = (/** @type {number} */ size) => `bench-list-${size}`;

/** SQL: user bench-list-N owns N conversations, each with two other people and a last message. */
export function listSeedSql(/** @type {number[]} */ sizes) {
  return sizes
    .map((size) => {
      const user = userOf(size);
      const numbers = `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${size - 1})`;
      return `
${numbers}
INSERT INTO conversations (id, title, direct, created_by, created_at, updated_at, last_seq,
    last_message_sender_id, last_message_preview, last_message_at)
  SELECT '${user}-' || i, 'conversation ' || i, 0, '${user}', ${BASE_TIME}, ${BASE_TIME} + i * 1000, 1 + i % 50,
    'bench-peer-' || (i % ${PEERS}), 'the last thing someone said in conversation ' || i, ${BASE_TIME} + i * 1000
  FROM n;
${numbers}
INSERT INTO participants (conversation_id, user_id, role, joined_at, last_read_seq, last_delivered_seq, activity_at)
  SELECT '${user}-' || i, '${user}', 'owner', ${BASE_TIME}, 0, 0, ${BASE_TIME} + i * 1000 FROM n
  UNION ALL
  SELECT '${user}-' || i, 'bench-peer-' || (i % ${PEERS}), 'member', ${BASE_TIME}, 0, 0, ${BASE_TIME} + i * 1000 FROM n
  UNION ALL
  SELECT '${user}-' || i, 'bench-peer-' || ((i + 1) % ${PEERS}), 'member', ${BASE_TIME}, 0, 0, ${BASE_TIME} + i * 1000 FROM n;`;
    })
    .join("\n");
}

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {{ requests: number }} options
 */
export async function conversationList(ctx, { requests }) {
  const api = ctx.product.api;
  const base = "/v1/conversations";
  const page = (/** @type {number} */ expected) => (/** @type {any} */ body) =>
    body?.conversations?.length === expected && body.conversations[0]?.participants?.length === 3;
  const kinds = [{ size: 0, page: "floor", path: "/bench/noop", user: userOf(10), check: undefined }];
  for (const size of LIST_SIZES) {
    const user = userOf(size);
    kinds.push({ size, page: "first, limit 20", path: `${base}?limit=20`, user, check: page(Math.min(20, size)) });
    kinds.push({ size, page: "first, limit 100", path: `${base}?limit=100`, user, check: page(Math.min(100, size)) });
    // A second page needs a cursor: take it from the user's first page of 20.
    const first = await api("GET", `${base}?limit=20`, user);
    if (first.body?.nextCursor) {
      const path = `${base}?limit=20&cursor=${encodeURIComponent(first.body.nextCursor)}`;
      kinds.push({ size, page: "second, limit 20", path, user, check: page(Math.min(20, size - 20)) });
    }
  }
  const measured = await measureRest(api, kinds, requests);
  const rows = kinds.map((kind, k) => ({
    conversations: kind.size,
    page: kind.page,
    .../** @type {any} */ (measured[k]),
  }));
  const listRows = rows.filter((r) => r.page !== "floor");
  const allTrips = new Set(listRows.flatMap((r) => r.d1RoundTrips));
  for (const r of rows) {
    ctx.log(
      `  ${r.conversations} ${r.page}: p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms, ${r.d1RoundTrips} round trips`,
    );
  }
  return { requestsPerKind: requests, rows, roundTripsConstant: allTrips.size === 1, roundTrips: [...allTrips] };
}
