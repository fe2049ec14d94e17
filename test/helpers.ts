import { env, exports } from "cloudflare:workers";
import { SignJWT } from "jose";
import { expect } from "vitest";
import type { ConversationDto } from "../src/schemas";

const secret = () => new TextEncoder().encode(env.AUTH_SECRET);

/** A valid dev token for `userId`, as `npm run token` makes; `claims` and `expiresIn` override. */
export async function tokenFor(
  userId: string,
  expiresIn: string | number = "1h",
  claims: Record<string, unknown> = {},
) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(secret());
}

let counter = 0;
/** A user id unique within this test file (storage is shared by the tests of one file). */
export const uniqueUser = (name = "user") => `${name}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

export interface CallOptions {
  method?: string;
  body?: unknown;
  rawBody?: BodyInit;
  headers?: Record<string, string>;
  /** The user to authenticate as; a token is signed for them. */
  as?: string;
}

/** A request to the Worker through its real fetch handler. */
export async function call(path: string, options: CallOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.as) headers.Authorization = `Bearer ${await tokenFor(options.as)}`;
  let body: BodyInit | undefined = options.rawBody;
  if (options.body !== undefined) {
    headers["Content-Type"] ??= "application/json";
    body = JSON.stringify(options.body);
  }
  return exports.default.fetch(
    new Request(`https://chat.test${path}`, { method: options.method ?? "GET", headers, body }),
  );
}

export async function expectError(res: Response, status: number, code: string) {
  const text = await res.text();
  expect({ status: res.status, text }).toMatchObject({ status });
  const body = JSON.parse(text);
  expect(body).toEqual({ error: expect.objectContaining({ code, message: expect.any(String) }) });
  return body;
}

/** Creates a group conversation owned by `owner` and returns it. */
export async function createConversation(owner: string, participantIds: string[], extra: Record<string, unknown> = {}) {
  const res = await call("/v1/conversations", { method: "POST", as: owner, body: { participantIds, ...extra } });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as ConversationDto;
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 3000, what = "a condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Writes `count` messages from `senderId` straight into D1 (seq 1..count), as a long history would be. */
export async function seedMessages(conversationId: string, senderId: string, count: number) {
  await env.DB.batch([
    env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
       INSERT INTO messages (id, conversation_id, seq, sender_id, content, created_at)
       SELECT ?1 || '-' || i, ?1, i, ?2, 'bulk ' || i, 1 FROM n`,
    ).bind(conversationId, senderId, count),
    env.DB.prepare("UPDATE conversations SET last_seq = ?2 WHERE id = ?1").bind(conversationId, count),
  ]);
}
