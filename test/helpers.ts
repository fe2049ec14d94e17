import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { SignJWT } from "jose";
import { expect } from "vitest";
import type { ConversationRoom } from "../src/room/room";
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

/** The conversation's room, by id. */
export const roomStub = (conversationId: string) => env.ROOMS.getByName(conversationId);

/** Runs `fn` on the room's own SQLite (its system of record), inside the Object. */
export async function inRoomSql<T>(conversationId: string, fn: (sql: SqlStorage) => T): Promise<T> {
  return runInDurableObject(roomStub(conversationId), (_instance: ConversationRoom, state) => fn(state.storage.sql));
}

export interface StoredMessage {
  seq: number;
  id: string;
  senderId: string;
  localId: string | null;
  content: string;
  editedAt: number | null;
  deletedAt: number | null;
}

/** Every message the room has stored, by seq. */
export async function storedMessages(conversationId: string): Promise<StoredMessage[]> {
  return inRoomSql(
    conversationId,
    (sql) =>
      sql
        .exec(
          `SELECT seq, id, sender_id AS senderId, local_id AS localId, content, edited_at AS editedAt,
           deleted_at AS deletedAt FROM messages ORDER BY seq`,
        )
        .toArray() as unknown as StoredMessage[],
  );
}

/** A participant's markers as the room stores them; null when they are not a participant. */
export async function storedMarkers(conversationId: string, userId: string) {
  return inRoomSql(
    conversationId,
    (sql) =>
      (sql
        .exec(
          "SELECT last_read_seq AS lastReadSeq, last_delivered_seq AS lastDeliveredSeq FROM participants WHERE user_id = ?",
          userId,
        )
        .toArray()[0] as { lastReadSeq: number; lastDeliveredSeq: number } | undefined) ?? null,
  );
}

/** What a write to the room would change: its conversation row, participants, messages, tickets. */
export async function roomFingerprint(conversationId: string) {
  return inRoomSql(conversationId, (sql) =>
    sql
      .exec(
        `SELECT
           (SELECT group_concat(seq || ':' || content || ':' || coalesce(local_id, '') || ':' || coalesce(edited_at, '')
              || ':' || coalesce(deleted_at, ''), '|') FROM messages) AS messages,
           (SELECT group_concat(user_id || ':' || role || ':' || last_read_seq || ':' || last_delivered_seq, '|')
              FROM participants) AS participants,
           (SELECT group_concat(user_id, '|') FROM departed) AS departed,
           (SELECT updated_at || ':' || last_seq || ':' || coalesce(title, '') FROM conversation) AS conversation`,
      )
      .one(),
  );
}

/** Writes `count` messages from `senderId` straight into the room's storage (seq 1..count), as a long history would be. */
export async function seedMessages(conversationId: string, senderId: string, count: number) {
  await inRoomSql(conversationId, (sql) => {
    sql.exec(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
       INSERT INTO messages (seq, id, sender_id, content, created_at)
       SELECT (SELECT coalesce(max(seq), 0) FROM messages) + i, ?1 || '-' || i, ?2, 'bulk ' || i, 1 FROM n`,
      conversationId,
      senderId,
      count,
    );
    sql.exec("UPDATE conversation SET last_seq = (SELECT max(seq) FROM messages)");
  });
}

/** Writes `count` messages into D1's 0.1 messages table (seq 1..count), as version 0.1 stored them. */
export async function seedLegacyMessages(conversationId: string, senderId: string, count: number) {
  await env.DB.batch([
    env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
       INSERT INTO messages (id, conversation_id, seq, sender_id, content, created_at)
       SELECT ?1 || '-' || i, ?1, i, ?2, 'bulk ' || i, 1 FROM n`,
    ).bind(conversationId, senderId, count),
    env.DB.prepare("UPDATE conversations SET last_seq = ?2 WHERE id = ?1").bind(conversationId, count),
  ]);
}

/** Waits until D1's list projection of the conversation has caught up with the room. */
export async function projected(conversationId: string) {
  const rev = await inRoomSql(conversationId, (sql) => sql.exec("SELECT rev FROM conversation").one().rev as number);
  await eventually(
    async () => {
      const row = await env.DB.prepare("SELECT projected_version AS v FROM conversations WHERE id = ?")
        .bind(conversationId)
        .first<{ v: number }>();
      return (row?.v ?? 0) >= rev;
    },
    5_000,
    "the list projection",
  );
}

/** Waits until the room has fed every inbox its current version (its outbox's second consumer is done). */
export async function fed(conversationId: string) {
  await eventually(
    () =>
      inRoomSql(conversationId, (sql) => {
        const rev = sql.exec<{ rev: number }>("SELECT rev FROM conversation").one().rev;
        const row = sql.exec<{ value: number }>("SELECT value FROM meta WHERE key = 'inbox_version'").toArray()[0];
        return Number(row?.value ?? 0) >= rev;
      }),
    5_000,
    "the inbox feed",
  );
}
