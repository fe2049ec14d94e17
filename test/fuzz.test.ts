import { env, exports } from "cloudflare:workers";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_STATUS } from "../src/errors";
import { LOCAL_ID } from "../src/schemas";
import { createConversation, projected, roomFingerprint, tokenFor, uniqueUser } from "./helpers";
import { propertyRuns, reportFigures } from "./property";
import { connect, type TestSocket } from "./socket";

/*
 * Generated bad input for every REST route and every frame type. The property (API.md, guarantee 7): never a
 * 5xx; a refusal is the one error body with a code of the catalogue whose status is the response's; nothing in
 * D1 changes. Every generated case is bad by construction (each one breaks at least one rule), so any 2xx
 * on a write route is a finding too.
 */

const BASE = "https://chat.test";
const figures = { restCases: 0, frameCases: 0, closingFrames: 0 };

// ---- The scene: a conversation with messages, its owner and member, and a stranger ----------------------

afterAll(() => reportFigures("fuzz", figures));

let owner = "";
let member = "";
let stranger = "";
let conversationId = "";
const tokens: Record<string, string> = {};
const LAST_SEQ = 3;

beforeAll(async () => {
  owner = uniqueUser("owner");
  member = uniqueUser("member");
  stranger = uniqueUser("stranger");
  for (const u of [owner, member, stranger]) tokens[u] = await tokenFor(u, "2h");
  conversationId = (await createConversation(owner, [member], { title: "fuzz" })).id;
  for (let i = 1; i <= LAST_SEQ; i++) {
    const res = await request("POST", `/v1/conversations/${conversationId}/messages`, {
      as: owner,
      json: { content: `message ${i}`, localId: `seed-${i}` },
    });
    expect(res.status).toBe(201);
  }
  // The member has read everything, so even a read marker that slipped through would change nothing.
  expect(
    (await request("POST", `/v1/conversations/${conversationId}/read`, { as: member, json: { seq: LAST_SEQ } })).status,
  ).toBe(200);
  // D1's list projection is written shortly after: let it settle, so that "D1 unchanged" means it.
  await projected(conversationId);
});

interface RequestOptions {
  as?: string;
  json?: unknown;
  raw?: BodyInit;
  headers?: Record<string, string>;
}

function request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  if (options.as) headers.Authorization = `Bearer ${tokens[options.as]}`;
  let body: BodyInit | undefined = options.raw;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  Object.assign(headers, options.headers);
  return exports.default.fetch(new Request(`${BASE}${path}`, { method, headers, body }));
}

/** A fingerprint of everything in D1: counts, and sums of what a write would move. */
async function fingerprint(): Promise<Record<string, unknown>> {
  const row = await env.DB.prepare(
    `SELECT
       (SELECT count(*) FROM conversations) AS conversations,
       (SELECT total(updated_at) + total(last_seq) + total(length(coalesce(title, ''))) FROM conversations) AS conversationSums,
       (SELECT count(*) FROM participants) AS participants,
       (SELECT total(last_read_seq) + total(last_delivered_seq) + total(activity_at) + total(length(role)) FROM participants) AS participantSums,
       (SELECT count(*) FROM messages) AS messages,
       (SELECT total(length(content)) + total(coalesce(edited_at, 0)) + total(coalesce(deleted_at, 0)) FROM messages) AS messageSums,
       (SELECT count(*) FROM push_subscriptions) AS pushSubscriptions`,
  ).first();
  return row ?? {};
}

/** Runs a property and proves D1, and the conversation's room, are as they were before. */
async function unchanged(run: () => Promise<void>) {
  const before = await fingerprint();
  const roomBefore = await roomFingerprint(conversationId);
  await run();
  expect(await fingerprint(), "D1 changed").toEqual(before);
  expect(await roomFingerprint(conversationId), "the room changed").toEqual(roomBefore);
}

const LEAK = [/SQLITE/i, /D1_/, /^\s*at\s/m, /\.(ts|js|mjs):\d+:\d+/, /drizzle/i, /zod/i];

/** The response to bad input: a 4xx (never a 5xx), the one error body, a code of the catalogue, no leak. */
async function expectRefused(res: Response, what: string, options: { allowSuccess?: boolean } = {}) {
  figures.restCases++;
  if (res.status === 101) {
    res.webSocket?.accept();
    res.webSocket?.close(1000, "fuzz");
  }
  const text = await res.text();
  const label = `${what} → ${res.status} ${text.slice(0, 300)}`;
  expect(res.status, label).toBeLessThan(500);
  if (res.status < 400) {
    expect(options.allowSuccess, label).toBe(true);
    return;
  }
  let body: { error?: { code?: string; message?: unknown } } = {};
  expect(() => {
    body = JSON.parse(text);
  }, label).not.toThrow();
  expect(Object.keys(body), label).toEqual(["error"]);
  const code = body.error?.code ?? "";
  expect(Object.keys(ERROR_STATUS), label).toContain(code);
  expect(ERROR_STATUS[code as keyof typeof ERROR_STATUS], label).toBe(res.status);
  expect(typeof body.error?.message, label).toBe("string");
  for (const pattern of LEAK) expect(text, label).not.toMatch(pattern);
}

// ---- Generators of bad values ---------------------------------------------------------------------------

/** Strings a parser or a database may choke on; each is fine Unicode (well-formed UTF-16). */
const oddString = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "\t\n\r ",
    "\u00a0\u2003\u3000",
    "\u0000",
    "\u0000abc",
    "\u200b\u200c\u200d",
    "\u202eevil",
    "\ufeff",
    "😀",
    "👩‍👩‍👧‍👦",
    "é",
    "é",
    "𝕏𝕐",
    "%00",
    "%",
    "../../etc/passwd",
    "'; DROP TABLE messages; --",
    '" OR 1=1 --',
    "<script>alert(1)</script>",
    "$" + "{jndi:ldap://x}",
    "__proto__",
    "constructor",
    "null",
    "undefined",
    "NaN",
    "-0",
    "1e400",
    "0x10",
    "Infinity",
  ),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }).filter((s) => s.isWellFormed()),
  fc.integer({ min: 4001, max: 5000 }).map((n) => "a".repeat(n)),
  fc.integer({ min: 129, max: 300 }).map((n) => "u".repeat(n)),
);

/** JSON values of every other type. */
const notAString = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.jsonValue(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue(), { maxKeys: 3 }),
);
const notABoolean = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 10 }),
  fc.constant(null),
  fc.array(fc.boolean()),
  fc.object(),
);
const notASeq = fc.oneof(
  fc.integer({ max: -1 }),
  fc.double().filter((d) => !Number.isInteger(d)),
  fc.constantFrom(2 ** 53, 2 ** 60, -0.5, 1.5),
  fc.string({ maxLength: 10 }),
  fc.constant(null),
  fc.boolean(),
  fc.array(fc.nat()),
  fc.object(),
);
const badUserId = fc.oneof(
  oddString.filter((s) => !/^[A-Za-z0-9._:@-]{1,128}$/.test(s)),
  notAString,
  fc.constantFrom("a b", "a|b", "a/b", "usér", "a\nb"),
);
const badLocalId = fc.oneof(
  oddString.filter((s) => !LOCAL_ID.test(s)),
  notAString,
  fc.constant("x".repeat(65)),
);
const whiteSpace = fc
  .array(fc.constantFrom(" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\ufeff", "\u2028"), {
    minLength: 1,
    maxLength: 20,
  })
  .map((a) => a.join(""));
const badContent = fc.oneof(
  fc.constant(""),
  whiteSpace,
  fc.integer({ min: 4001, max: 6000 }).map((n) => "c".repeat(n)),
  fc.integer({ min: 2001, max: 3000 }).map((n) => "😀".repeat(n * 2)),
  notAString,
);
const badTitle = fc.oneof(
  fc.constant(""),
  whiteSpace,
  fc.integer({ min: 201, max: 400 }).map((n) => "t".repeat(n)),
  notAString.filter((v) => v !== null),
);
const badIdList = fc.oneof(
  fc.constant([]),
  fc.array(badUserId, { minLength: 1, maxLength: 4 }),
  fc.constant(["dup-user", "dup-user"]),
  fc.integer({ min: 100, max: 120 }).map((n) => Array.from({ length: n }, (_, i) => `many-${i}`)),
  notAString.filter((v) => !Array.isArray(v)),
);
/** Keys a client must not be able to set, and keys that probe the parser. */
const extraKey = fc.oneof(
  fc.constantFrom(
    "seq",
    "id",
    "role",
    "createdBy",
    "senderId",
    "userId",
    "conversationId",
    "lastReadSeq",
    "lastDeliveredSeq",
    "deletedAt",
    "editedAt",
    "createdAt",
    "constructor",
    "prototype",
    "toString",
    "hasOwnProperty",
    "",
    " ",
    "content ",
    "Content",
  ),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }),
);

// ---- Bodies: each one breaks at least one rule of its route -------------------------------------------------

interface Field {
  name: string;
  required: boolean;
  valid: unknown;
  invalid: fc.Arbitrary<unknown>;
}

/** Raw JSON text for an object; `__proto__` goes in as a real key, as a hostile client would write it. */
function objectText(entries: [string, unknown][]): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? "null"}`).join(",")}}`;
}

function badBodies(fields: Field[]): fc.Arbitrary<{ text: string; note: string }> {
  const valid = fields.map((f): [string, unknown] => [f.name, f.valid]);
  const strategies: fc.Arbitrary<{ text: string; note: string }>[] = [
    // one field of the wrong shape, the others right
    fc.constantFrom(...fields).chain((field) =>
      field.invalid.map((value) => ({
        text: objectText(valid.map(([k, v]) => [k, k === field.name ? value : v])),
        note: `bad ${field.name}`,
      })),
    ),
    // an extra field: mass assignment, parser probes
    fc
      .tuple(
        extraKey.filter((k) => !fields.some((f) => f.name === k)),
        fc.jsonValue(),
      )
      .map(([k, v]) => ({
        text: objectText([...valid, [k, v]]),
        note: `extra ${JSON.stringify(k)}`,
      })),
    // __proto__, as a key of the body or nested
    fc.jsonValue().map((v) => ({ text: objectText([["__proto__", v], ...valid]), note: "__proto__ key" })),
    fc.constant({
      text: objectText([...valid, ["__proto__", { polluted: true, role: "owner", seq: 1 }]]),
      note: "__proto__ object",
    }),
    fc.constant({
      text: `{"constructor":{"prototype":{"polluted":true}},${objectText(valid).slice(1)}`,
      note: "constructor.prototype",
    }),
    // not an object at all
    fc
      .oneof(
        fc.integer(),
        fc.string({ maxLength: 20 }),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.jsonValue(), { maxLength: 3 }),
      )
      .map((v) => ({ text: JSON.stringify(v), note: "not an object" })),
    // not JSON
    fc
      .oneof(
        fc.constantFrom("", " ", "{", "}", "{,}", "{'a':1}", "[", "nul", "\ufeff{}", "NaN", '{"a":1,}', "\u0000"),
        fc.string({ maxLength: 30 }).filter((t) => {
          try {
            JSON.parse(t);
            return false;
          } catch {
            return true;
          }
        }),
        fc.nat({ max: 1000 }).map((n) => {
          const whole = objectText(valid);
          return whole.slice(0, n % Math.max(1, whole.length - 1));
        }),
        fc.constant(`${objectText(valid)} trailing`),
        fc.constant(`${objectText(valid)}${objectText(valid)}`),
      )
      .map((text) => ({ text, note: "not JSON" })),
  ];
  const required = fields.filter((f) => f.required);
  if (required.length > 0) {
    strategies.push(
      fc.constantFrom(...required).map((field) => ({
        text: objectText(valid.filter(([k]) => k !== field.name)),
        note: `no ${field.name}`,
      })),
    );
  }
  return fc.oneof(...strategies);
}

interface BodyRoute {
  name: string;
  method: string;
  path: () => string;
  as: () => string;
  fields: () => Field[];
}

const bodyRoutes: BodyRoute[] = [
  {
    name: "POST /v1/conversations",
    method: "POST",
    path: () => "/v1/conversations",
    as: () => owner,
    fields: () => [
      { name: "participantIds", required: true, valid: [member], invalid: fc.oneof(badIdList, fc.constant([owner])) },
      { name: "title", required: false, valid: "ok", invalid: badTitle },
      { name: "direct", required: false, valid: false, invalid: notABoolean },
    ],
  },
  {
    name: "POST /v1/conversations/:id/participants",
    method: "POST",
    path: () => `/v1/conversations/${conversationId}/participants`,
    as: () => owner,
    fields: () => [{ name: "userIds", required: true, valid: [uniqueUser("newcomer")], invalid: badIdList }],
  },
  {
    name: "POST /v1/conversations/:id/messages",
    method: "POST",
    path: () => `/v1/conversations/${conversationId}/messages`,
    as: () => owner,
    fields: () => [
      { name: "content", required: true, valid: "hello", invalid: badContent },
      { name: "localId", required: false, valid: "fuzz-local", invalid: badLocalId },
    ],
  },
  {
    name: "PATCH /v1/conversations/:id/messages/:seq",
    method: "PATCH",
    path: () => `/v1/conversations/${conversationId}/messages/1`,
    as: () => owner,
    fields: () => [{ name: "content", required: true, valid: "edited", invalid: badContent }],
  },
  {
    name: "POST /v1/conversations/:id/read",
    method: "POST",
    path: () => `/v1/conversations/${conversationId}/read`,
    as: () => member,
    fields: () => [{ name: "seq", required: true, valid: LAST_SEQ, invalid: notASeq }],
  },
  {
    name: "POST /v1/conversations/:id/typing",
    method: "POST",
    path: () => `/v1/conversations/${conversationId}/typing`,
    as: () => member,
    fields: () => [{ name: "typing", required: true, valid: true, invalid: notABoolean }],
  },
  {
    name: "PUT /v1/push/subscriptions",
    method: "PUT",
    path: () => "/v1/push/subscriptions",
    as: () => member,
    fields: () => [
      {
        name: "endpoint",
        required: true,
        valid: "https://push.example/sub/1",
        invalid: fc.oneof(oddString, notAString),
      },
      {
        name: "keys",
        required: true,
        valid: {
          p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
          auth: "tBHItJI5svbpez7KI4CCXg",
        },
        invalid: fc.oneof(notAString, fc.record({ p256dh: notAString }), fc.constant({ p256dh: "x" })),
      },
    ],
  },
  {
    name: "DELETE /v1/push/subscriptions",
    method: "DELETE",
    path: () => "/v1/push/subscriptions",
    as: () => member,
    fields: () => [{ name: "endpoint", required: true, valid: "https://push.example/sub/1", invalid: notAString }],
  },
];

describe("fuzzing REST bodies", () => {
  for (const route of bodyRoutes) {
    it(`${route.name}: bad bodies get a 4xx from the catalogue and change nothing`, { timeout: 60_000 }, async () => {
      const { seed, numRuns } = propertyRuns(5101, 300);
      await unchanged(() =>
        fc.assert(
          fc.asyncProperty(badBodies(route.fields()), async ({ text, note }) => {
            const res = await request(route.method, route.path(), { as: route.as(), raw: text });
            await expectRefused(res, `${route.name} ${note}: ${text.slice(0, 120)}`);
          }),
          { seed, numRuns },
        ),
      );
    });
  }

  it("a right body under a Content-Type that is not JSON, or a lying Content-Length, is a 4xx", {
    timeout: 60_000,
  }, async () => {
    const { seed, numRuns } = propertyRuns(5102, 200);
    const contentType = fc.oneof(
      fc.constantFrom(
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "json",
        "text/json",
        "application/jsonp",
        "*/*",
      ),
      fc.string({ maxLength: 30 }).filter((t) => !/json/i.test(t)),
    );
    const bad = fc.oneof(
      contentType.map((type) => ({
        headers: { "Content-Type": type },
        body: { content: "typed", localId: "ct" },
        note: `Content-Type ${type}`,
      })),
      fc.constantFrom("0", "1", "5", "-1", "abc", "99999999999", "1e3", " 12").map((length) => ({
        headers: { "Content-Length": length },
        body: { content: "", localId: "cl" },
        note: `Content-Length ${length}`,
      })),
    );
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(bad, async ({ headers, body, note }) => {
          const res = await request("POST", `/v1/conversations/${conversationId}/messages`, {
            as: owner,
            raw: JSON.stringify(body),
            headers,
          });
          await expectRefused(res, note);
        }),
        { seed, numRuns },
      ),
    );
  });

  it("random bytes as a body are a 4xx", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5103, 150);
    const routes = bodyRoutes.map((r) => [r.method, r] as const);
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...routes),
          fc.uint8Array({ minLength: 1, maxLength: 200 }),
          async ([method, route], bytes) => {
            const res = await request(method, route.path(), { as: route.as(), raw: bytes });
            await expectRefused(res, `${route.name} with ${bytes.length} random bytes`);
          },
        ),
        { seed, numRuns },
      ),
    );
  });
});

// ---- Paths, queries and headers ---------------------------------------------------------------------------

/** A path segment: percent-encoded odd strings, and raw text a URL parser may choke on. */
const segment = fc.oneof(
  oddString.filter((s) => s.length > 0 && s.length < 2000).map((s) => encodeURIComponent(s)),
  fc.constantFrom(
    "%",
    "%zz",
    "%E0%A4%A",
    "%ED%A0%80",
    "%00",
    "%2F",
    "..",
    ".",
    "%2e%2e",
    "a%20b",
    "%C0%AF",
    "x".repeat(3000),
  ),
);

describe("fuzzing REST paths, queries and headers", () => {
  it("odd ids, seqs and user ids in every route's path are a 4xx and change nothing", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5201, 600);
    // Existing seqs (however written) would edit or delete for real: those are not bad input.
    const badSeq = fc.oneof(segment, fc.nat().map(String)).filter((s) => !/^0*[1-3]$/.test(s));
    const cases = fc.oneof(
      segment.map((id) => ["GET", `/v1/conversations/${id}`, undefined] as const),
      segment.map((id) => ["POST", `/v1/conversations/${id}/participants`, { userIds: [member] }] as const),
      segment.map((id) => ["DELETE", `/v1/conversations/${id}/participants/${member}`, undefined] as const),
      segment.map((u) => ["DELETE", `/v1/conversations/${conversationId}/participants/${u}`, undefined] as const),
      segment.map((id) => ["GET", `/v1/conversations/${id}/messages`, undefined] as const),
      segment.map((id) => ["POST", `/v1/conversations/${id}/messages`, { content: "x", localId: "p" }] as const),
      segment.map((id) => ["PATCH", `/v1/conversations/${id}/messages/1`, { content: "x" }] as const),
      badSeq.map((seq) => ["PATCH", `/v1/conversations/${conversationId}/messages/${seq}`, { content: "x" }] as const),
      badSeq.map((seq) => ["DELETE", `/v1/conversations/${conversationId}/messages/${seq}`, undefined] as const),
      segment.map((id) => ["DELETE", `/v1/conversations/${id}/messages/1`, undefined] as const),
      segment.map((id) => ["POST", `/v1/conversations/${id}/read`, { seq: 1 }] as const),
      segment.map((id) => ["POST", `/v1/conversations/${id}/typing`, { typing: true }] as const),
      segment.map((id) => ["POST", `/v1/conversations/${id}/ticket`, undefined] as const),
      segment.map((id) => ["GET", `/v1/conversations/${id}/ws`, undefined] as const),
      segment.map((rest) => ["GET", `/v1/${rest}`, undefined] as const),
      segment.map((rest) => ["POST", `/v1/conversations/${conversationId}/${rest}`, {}] as const),
    );
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(cases, async ([method, path, json]) => {
          const headers = path.endsWith("/ws") ? { Upgrade: "websocket" } : undefined;
          const res = await request(method, path, { as: owner, json, headers });
          // A GET of a whole, well-formed path may be a real page (a conversation list); writes never succeed.
          await expectRefused(res, `${method} ${path.slice(0, 200)}`);
        }),
        { seed, numRuns },
      ),
    );
  });

  it("odd query strings never make a 5xx and change nothing", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5202, 500);
    const key = fc.oneof(
      fc.constantFrom(
        "limit",
        "cursor",
        "before",
        "after",
        "since",
        "ticket",
        "__proto__",
        "constructor",
        "toString",
        "limit[]",
        "",
        "LIMIT",
      ),
      fc.string({ maxLength: 8 }),
    );
    const value = fc.oneof(
      oddString,
      fc.integer().map(String),
      fc.double().map(String),
      fc.constantFrom(
        "0",
        "-1",
        "101",
        "1e2",
        "1.5",
        "9007199254740993",
        "999999999999999",
        "1000000000000000",
        " 5",
        "5 ",
        "+5",
        "0x1",
        btoa('[1,"x"]'),
        btoa(JSON.stringify([1e300, "x"])),
      ),
    );
    const query = fc
      .array(fc.tuple(key, value), { minLength: 1, maxLength: 4 })
      .map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&"));
    const rawQuery = fc.constantFrom(
      "limit=%",
      "cursor=%E0%A4%A",
      "before=%ED%A0%80",
      "after",
      "&&&",
      "=5",
      "limit=1&limit=2",
      "after=1&before=2",
    );
    const target = fc.constantFrom(
      "/v1/conversations",
      `/v1/conversations/{id}/messages`,
      `/v1/conversations/{id}/ws`,
      "/v1/inbox",
      "/v1/inbox/ws",
    );
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(target, fc.oneof(query, rawQuery), async (path, q) => {
          const ws = path.endsWith("/ws");
          // On the socket route a bad `since` first (the first value of a name counts) keeps every case bad.
          const full = `${path.replace("{id}", conversationId)}?${ws ? "since=x&" : ""}${q}`;
          const res = await request("GET", full, { as: member, headers: ws ? { Upgrade: "websocket" } : undefined });
          await expectRefused(res, `GET ${full}`, { allowSuccess: !ws });
        }),
        { seed, numRuns },
      ),
    );
  });

  it("odd Authorization headers are 401 on REST and on the socket route", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5203, 300);
    const real = await tokenFor(member);
    const [h, p, s] = real.split(".") as [string, string, string];
    const b64 = (v: unknown) => btoa(JSON.stringify(v)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
    const authorization = fc.oneof(
      oddString.filter((t) => /^[\x20-\x7e]*$/.test(t)),
      fc
        .string({ maxLength: 60 })
        .filter((t) => /^[\x20-\x7e]*$/.test(t))
        .map((t) => `Bearer ${t}`),
      fc.constantFrom(
        "Bearer",
        "Bearer ",
        `Bearer ${h}.${p}`,
        `Bearer ${h}.${p}.`,
        `Bearer ${h}..${s}`,
        `Bearer ${p}.${h}.${s}`,
        `Bearer ${h}.${p}.${s}x`,
        `Bearer ${h}.${p}.${s.slice(1)}`,
        `Bearer ${h}.${b64({ sub: owner, exp: 4102444800 })}.${s}`,
        `Bearer ${b64({ alg: "none", typ: "JWT" })}.${p}.`,
        `Bearer ${b64({ alg: "HS256", crit: ["x"] })}.${p}.${s}`,
        `Basic ${btoa(`${member}:x`)}`,
        `Token ${real}`,
        `${real}`,
        `Bearer ${real} ${real}`,
        `Bearer ${real},`,
      ),
      fc.nat({ max: 1000 }).map((i) => {
        // One character of a real token changed. Not the last of a part: its low bits are padding, and a
        // change there may decode to the very same bytes.
        const changeable = [...real].flatMap((ch, at) =>
          ch !== "." && real[at + 1] !== undefined && real[at + 1] !== "." ? [at] : [],
        );
        const at = changeable[i % changeable.length] as number;
        const c = real[at] === "A" ? "B" : "A";
        return `Bearer ${real.slice(0, at)}${c}${real.slice(at + 1)}`;
      }),
    );
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(authorization, fc.boolean(), async (header, socketRoute) => {
          if (header === `Bearer ${real}`) return;
          const path = socketRoute ? `/v1/conversations/${conversationId}/ws` : "/v1/conversations";
          const headers: Record<string, string> = { Authorization: header };
          if (socketRoute) headers.Upgrade = "websocket";
          const res = await request("GET", path, { headers });
          await expectRefused(res, `Authorization: ${header.slice(0, 80)}`);
          expect(res.status, header).toBe(401);
        }),
        { seed, numRuns },
      ),
    );
  });
});

// ---- Frames, through real sockets ------------------------------------------------------------------------

const serverTypes = [
  "ack",
  "message",
  "ready",
  "error",
  "resync",
  "receipt",
  "presence",
  "participants",
  "message_updated",
];

/** Frames that break at least one rule: each must get exactly one error frame and leave the socket open. */
const badFrame: fc.Arbitrary<{ text: string; note: string }> = (() => {
  const send = (o: [string, unknown][]) => objectText([["type", "send"], ...o]);
  const strategies: fc.Arbitrary<{ text: string; note: string }>[] = [
    badContent.map((content) => ({
      text: send([
        ["localId", "f-content"],
        ["content", content],
      ]),
      note: "send: bad content",
    })),
    badLocalId.map((localId) => ({
      text: send([
        ["localId", localId],
        ["content", "hello"],
      ]),
      note: "send: bad localId",
    })),
    fc.constantFrom("content", "localId").map((missing) => ({
      text: send(missing === "content" ? [["localId", "f-missing"]] : [["content", "hello"]]),
      note: `send: no ${missing}`,
    })),
    fc
      .tuple(
        extraKey.filter((k) => !["type", "content", "localId"].includes(k)),
        fc.jsonValue(),
      )
      .map(([k, v]) => ({
        text: send([
          ["localId", "f-extra"],
          ["content", "hello"],
          [k, v],
        ]),
        note: `send: extra ${JSON.stringify(k)}`,
      })),
    fc.jsonValue().map((v) => ({
      text: objectText([
        ["__proto__", v],
        ["type", "send"],
        ["localId", "f-proto"],
        ["content", "hello"],
      ]),
      note: "send: __proto__",
    })),
    notABoolean.map((typing) => ({
      text: objectText([
        ["type", "typing"],
        ["typing", typing],
      ]),
      note: "typing: bad typing",
    })),
    fc
      .tuple(
        extraKey.filter((k) => k !== "type" && k !== "typing"),
        fc.jsonValue(),
      )
      .map(([k, v]) => ({
        text: objectText([
          ["type", "typing"],
          ["typing", true],
          [k, v],
        ]),
        note: `typing: extra ${JSON.stringify(k)}`,
      })),
    notASeq.map((seq) => ({
      text: objectText([
        ["type", "read"],
        ["seq", seq],
      ]),
      note: "read: bad seq",
    })),
    fc.constant({ text: objectText([["type", "read"]]), note: "read: no seq" }),
    fc.constant({ text: '{"type":"read","seq":1e400}', note: "read: seq 1e400" }),
    fc
      .tuple(
        extraKey.filter((k) => k !== "type" && k !== "seq"),
        fc.jsonValue(),
      )
      .map(([k, v]) => ({
        text: objectText([
          ["type", "read"],
          ["seq", 0],
          [k, v],
        ]),
        note: `read: extra ${JSON.stringify(k)}`,
      })),
    fc
      .oneof(fc.constantFrom(...serverTypes, "SEND", " send", "send ", "", "ping", "typing\u0000"), notAString)
      .map((type) => ({
        text: objectText([
          ["type", type],
          ["localId", "f-type"],
          ["content", "hello"],
          ["typing", true],
          ["seq", 0],
        ]),
        note: `type ${JSON.stringify(type)}`,
      })),
    fc.constant({
      text: objectText([
        ["localId", "f-notype"],
        ["content", "hello"],
      ]),
      note: "no type",
    }),
    fc
      .oneof(
        fc.integer(),
        fc.string({ maxLength: 20 }),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.jsonValue(), { maxLength: 3 }),
      )
      .map((v) => ({ text: JSON.stringify(v), note: "not an object" })),
    fc
      .oneof(
        fc.constantFrom(
          "",
          " ",
          "{",
          "PING",
          "Ping",
          "ping ",
          "pong",
          "{'type':'send'}",
          "\u0000",
          "undefined",
          "NaN",
          '{"type":"send",}',
        ),
        fc.string({ maxLength: 40 }).filter((t) => {
          if (t === "ping") return false; // the runtime's auto-response, not a frame
          try {
            JSON.parse(t);
            return false;
          } catch {
            return true;
          }
        }),
      )
      .map((text) => ({ text, note: "not JSON" })),
    fc.integer({ min: 4001, max: 10_000 }).map((n) => ({
      text: send([
        ["localId", "f-big"],
        ["content", "b".repeat(n)],
      ]),
      note: `send: ${n} characters, under the frame limit`,
    })),
  ];
  return fc.oneof(...strategies);
})();

describe("fuzzing frames", () => {
  let socket: TestSocket;

  afterAll(() => {
    socket?.close();
  });

  it("bad frames of every type get one error frame from the catalogue, keep the socket open and change nothing", {
    timeout: 120_000,
  }, async () => {
    const { seed, numRuns } = propertyRuns(5301, 1500);
    socket = await connect(conversationId, member);
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(badFrame, async ({ text, note }) => {
          figures.frameCases++;
          const start = socket.frames.length;
          socket.send(text);
          const answer = await socket.until(
            (s) => s.frames.length > start && s.frames[start],
            3000,
            `the answer to ${note}`,
          );
          const label = `${note}: ${text.slice(0, 120)} → ${JSON.stringify(answer).slice(0, 300)}`;
          expect(answer.type, label).toBe("error");
          if (answer.type !== "error") return;
          expect(Object.keys(ERROR_STATUS), label).toContain(answer.code);
          expect(answer.code, label).not.toBe("internal");
          expect(answer.code, label).toBe("validation_failed");
          for (const pattern of LEAK) expect(answer.message, label).not.toMatch(pattern);
          // ref names the frame's localId when it had a well-formed one.
          let raw: unknown;
          try {
            raw = JSON.parse(text);
          } catch {
            raw = undefined;
          }
          const localId = typeof raw === "object" && raw !== null && "localId" in raw ? raw.localId : undefined;
          if (typeof localId === "string" && LOCAL_ID.test(localId)) expect(answer.ref, label).toBe(localId);
          expect(socket.closed, label).toBeUndefined();
        }),
        { seed, numRuns },
      ),
    );
    // Still a working socket: a typing frame reaches nobody else but is accepted silently.
    expect(socket.closed).toBeUndefined();
  });

  it("binary frames close with 1003 and frames over 32 KiB with 1009, changing nothing", {
    timeout: 60_000,
  }, async () => {
    const { seed, numRuns } = propertyRuns(5302, 40);
    const closing = fc.oneof(
      fc
        .uint8Array({ minLength: 0, maxLength: 300 })
        .map((bytes) => ({ data: bytes as Uint8Array | string, code: 1003 })),
      fc.string({ minLength: 1, maxLength: 40 }).map((s) => ({
        data: new TextEncoder().encode(JSON.stringify({ type: "send", localId: "bin", content: s })) as
          | Uint8Array
          | string,
        code: 1003,
      })),
      fc
        .integer({ min: 32_769, max: 60_000 })
        .map((n) => ({ data: JSON.stringify({ type: "send", localId: "huge", content: "h".repeat(n) }), code: 1009 })),
      fc.integer({ min: 11_000, max: 15_000 }).map((n) => ({
        data: JSON.stringify({ type: "send", localId: "hugeeuro", content: "€".repeat(n) }),
        code: 1009,
      })),
    );
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(closing, async ({ data, code }) => {
          figures.closingFrames++;
          const s = await connect(conversationId, member);
          s.ws.send(data);
          const closed = await s.waitClosed();
          expect(closed.code, `${typeof data === "string" ? data.length : data.byteLength} bytes`).toBe(code);
          expect(s.of("ack")).toEqual([]);
        }),
        { seed, numRuns },
      ),
    );
  });
});

describe("text that is not well-formed Unicode", () => {
  // JSON can carry a lone surrogate ("\ud800") that no UTF-8 can: stored as it came, D1 kept bytes that are
  // not UTF-8, every reader got U+FFFD in its place, and the same send again was "other content" (409).
  const lone = fc
    .tuple(
      fc.string({ unit: "grapheme-ascii", maxLength: 10 }),
      fc.integer({ min: 0xd800, max: 0xdfff }),
      fc.string({ unit: "grapheme-ascii", maxLength: 10 }),
    )
    .map(([before, unit, after]) => `${before}x${String.fromCharCode(unit)}x${after}`);
  const asJson = (s: string) =>
    JSON.stringify(s).replace(/[\ud800-\udfff]/g, (u) => `\\u${u.charCodeAt(0).toString(16)}`);

  let n = 0;

  it("is refused with 400 in contents and titles, changing nothing", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5401, 60);
    const target = fc.constantFrom("send content", "edit content", "title");
    const build = (where: string, t: string) =>
      where === "send content"
        ? ([
            "POST",
            `/v1/conversations/${conversationId}/messages`,
            `{"content":${asJson(t)},"localId":"lone-${n++}"}`,
          ] as const)
        : where === "edit content"
          ? (["PATCH", `/v1/conversations/${conversationId}/messages/1`, `{"content":${asJson(t)}}`] as const)
          : ([
              "POST",
              "/v1/conversations",
              `{"participantIds":[${JSON.stringify(member)}],"title":${asJson(t)}}`,
            ] as const);
    await unchanged(() =>
      fc.assert(
        fc.asyncProperty(target, lone, async (where, text) => {
          const [method, path, body] = build(where, text);
          const res = await request(method, path, { as: owner, raw: body });
          await expectRefused(res, `${method} ${path} ${body}`);
          expect(res.status).toBe(400);
        }),
        { seed, numRuns },
      ),
    );
  });

  it("is refused with an error frame in a send frame, changing nothing", { timeout: 60_000 }, async () => {
    const { seed, numRuns } = propertyRuns(5402, 30);
    const s = await connect(conversationId, owner);
    try {
      await unchanged(() =>
        fc.assert(
          fc.asyncProperty(lone, async (text) => {
            figures.frameCases++;
            const start = s.frames.length;
            const localId = `lone-frame-${n++}`;
            s.send(`{"type":"send","localId":"${localId}","content":${asJson(text)}}`);
            const answer = await s.until(
              (x) => x.frames.slice(start).find((f) => f.type === "ack" || f.type === "error"),
              3000,
            );
            expect(answer, asJson(text)).toMatchObject({ type: "error", code: "validation_failed", ref: localId });
          }),
          { seed, numRuns },
        ),
      );
    } finally {
      s.close();
    }
  });
});
