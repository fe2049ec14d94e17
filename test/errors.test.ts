import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { HTTPException } from "hono/http-exception";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { readLimits } from "../src/env";
import { ApiError, isStorageUnavailable, toApiError } from "../src/errors";
import type { MessageDto } from "../src/schemas";
import { withBindings } from "./d1-recorder";
import { call, createConversation, expectError, storedMessages, tokenFor, uniqueUser } from "./helpers";

const LIMIT = 64 * 1024;

/** What must never reach a client: driver or SQLite text, or a stack trace. */
function expectNoLeak(text: string) {
  expect(text).not.toMatch(/SQLITE/i);
  expect(text).not.toContain("D1_");
  expect(text).not.toMatch(/^\s*at\s/m);
  expect(text).not.toMatch(/\(?[\w/.-]+\.(ts|js|mjs):\d+:\d+\)?/);
}

/** Reads an error response: its status, its code, the one error shape, and no leak. */
async function expectCleanError(res: Response, status: number, code: string) {
  const text = await res.clone().text();
  expectNoLeak(text);
  return expectError(res, status, code);
}

async function expectNothingStoredFor(user: string) {
  const res = await call("/v1/conversations", { as: user });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { conversations: unknown[] }).conversations).toEqual([]);
}

/** A JSON body of exactly `bytes` bytes: a conversation whose title fills the rest. */
function bodyOfSize(bytes: number): string {
  const empty = JSON.stringify({ participantIds: ["someone"], title: "" });
  return JSON.stringify({ participantIds: ["someone"], title: "t".repeat(bytes - empty.length) });
}

describe("the error body", () => {
  it("answers an unknown route with 404 not_found and the one error shape", async () => {
    for (const res of [
      await call("/no-such-route"),
      await call("/v1/no-such-route", { as: uniqueUser() }),
      await call("/v1/conversations/abc/no-such-thing", { as: uniqueUser() }),
    ]) {
      expect(res.status).toBe(404);
      expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
      expect(await res.json()).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    }
  });

  it("answers a known path with an unknown method as an unknown route (404 not_found)", async () => {
    const res = await call("/v1/conversations", { method: "PATCH", as: uniqueUser(), body: {} });
    await expectCleanError(res, 404, "not_found");
  });

  it("refuses malformed JSON with 400 validation_failed, storing nothing", async () => {
    const me = uniqueUser();
    for (const rawBody of ["{not json", '{"participantIds": ["a"]', "", "null", "[]", '"text"', "42"]) {
      const res = await call("/v1/conversations", {
        method: "POST",
        as: me,
        rawBody,
        headers: { "Content-Type": "application/json" },
      });
      await expectCleanError(res, 400, "validation_failed");
    }
    await expectNothingStoredFor(me);
  });

  it("refuses a body that is not declared as JSON with 400 validation_failed, storing nothing", async () => {
    const me = uniqueUser();
    const rawBody = JSON.stringify({ participantIds: [uniqueUser()] });
    for (const headers of [
      { "Content-Type": "text/plain" },
      { "Content-Type": "application/x-www-form-urlencoded" },
      {} as Record<string, string>,
    ]) {
      const res = await call("/v1/conversations", { method: "POST", as: me, rawBody, headers });
      await expectCleanError(res, 400, "validation_failed");
    }
    await expectNothingStoredFor(me);
  });

  it("refuses unknown fields with 400 validation_failed, and details name the failing paths", async () => {
    const me = uniqueUser();
    const res = await call("/v1/conversations", {
      method: "POST",
      as: me,
      body: { participantIds: [uniqueUser()], createdBy: "someone-else", role: "owner" },
    });
    const body = await expectCleanError(res, 400, "validation_failed");
    expect(Array.isArray(body.error.details)).toBe(true);
    const paths = (body.error.details as { path: string }[]).map((d) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["createdBy", "role"]));
    await expectNothingStoredFor(me);
  });

  it("names the failing path of a nested value in details", async () => {
    const res = await call("/v1/conversations", {
      method: "POST",
      as: uniqueUser(),
      body: { participantIds: [uniqueUser(), "not a user id"] },
    });
    const body = await expectCleanError(res, 400, "validation_failed");
    expect(body.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: "participantIds.1" })]));
  });

  it("refuses a body over 64 KiB with 413 payload_too_large, storing nothing", async () => {
    const me = uniqueUser();
    const res = await call("/v1/conversations", {
      method: "POST",
      as: me,
      rawBody: bodyOfSize(LIMIT + 1),
      headers: { "Content-Type": "application/json" },
    });
    await expectCleanError(res, 413, "payload_too_large");
    await expectNothingStoredFor(me);
  });

  it("refuses a streamed body over 64 KiB without Content-Length with 413 payload_too_large", async () => {
    const chunk = new TextEncoder().encode(bodyOfSize(LIMIT + 1));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < chunk.length; i += 4096) controller.enqueue(chunk.slice(i, i + 4096));
        controller.close();
      },
    });
    const res = await call("/v1/conversations", {
      method: "POST",
      as: uniqueUser(),
      rawBody: stream,
      headers: { "Content-Type": "application/json" },
    });
    await expectCleanError(res, 413, "payload_too_large");
  });

  it("lets a body of exactly 64 KiB through to validation", async () => {
    const body = bodyOfSize(LIMIT);
    expect(new TextEncoder().encode(body).byteLength).toBe(LIMIT);
    const res = await call("/v1/conversations", {
      method: "POST",
      as: uniqueUser(),
      rawBody: body,
      headers: { "Content-Type": "application/json" },
    });
    // Not too large: refused only because the title is over 200 characters.
    const refused = await expectCleanError(res, 400, "validation_failed");
    expect(refused.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: "title" })]));
  });

  it("never shows driver text, SQL or a stack for strange input", async () => {
    const me = uniqueUser();
    const probes: [string, { method?: string; body?: unknown }][] = [
      ["/v1/conversations/%00", {}],
      [`/v1/conversations/${"x".repeat(5000)}`, {}],
      ["/v1/conversations/'; DROP TABLE conversations; --", {}],
      ["/v1/conversations?cursor=%FF%FE", {}],
      [`/v1/conversations?cursor=${btoa(JSON.stringify([1e300, "x"]))}`, {}],
      [`/v1/conversations?cursor=${btoa(JSON.stringify([-1, "x".repeat(60)]))}`, {}],
      ["/v1/conversations?limit=1e3", {}],
      ["/v1/conversations/abc/participants/%E0%A4%A", { method: "DELETE" }],
      ["/v1/conversations", { method: "POST", body: { participantIds: [{ $gt: "" }] } }],
      ["/v1/conversations", { method: "POST", body: { participantIds: ["a"], title: { toString: "x" } } }],
      ["/v1/conversations/abc/participants", { method: "POST", body: { userIds: null } }],
    ];
    for (const [path, options] of probes) {
      const res = await call(path, { ...options, as: me });
      const text = await res.text();
      expect(res.status, `${path}: ${text}`).toBeLessThan(500);
      expectNoLeak(text);
    }
  });
});

describe("storage failures through the app", () => {
  /** A D1Database whose every round trip fails with `error`. */
  function failingDb(error: Error): D1Database {
    const fail = () => Promise.reject(error);
    const statement = (): D1PreparedStatement => {
      const stmt = {
        bind: () => stmt,
        first: fail,
        run: fail,
        all: fail,
        raw: fail,
      } as unknown as D1PreparedStatement;
      return stmt;
    };
    return {
      prepare: statement,
      batch: fail,
      exec: fail,
      withSession: () => {
        throw error;
      },
      dump: fail,
    } satisfies D1Database;
  }

  async function callWith(db: D1Database, path: string, init: RequestInit = {}) {
    const ctx = createExecutionContext();
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${await tokenFor(uniqueUser())}`);
    const res = await createApp(readLimits(env)).fetch(
      new Request(`https://chat.test${path}`, { ...init, headers }),
      withBindings(env, { DB: db }),
      ctx,
    );
    await waitOnExecutionContext(ctx);
    return res;
  }

  it("answers 503 unavailable with Retry-After when D1 loses its connection", async () => {
    const db = failingDb(
      new Error("D1_ERROR: Network connection lost.", { cause: new Error("Network connection lost.") }),
    );
    // The routes that still read or write D1 (the directory): the list, and creating a conversation. The
    // routes of one conversation are answered by its room, from its own storage.
    for (const [path, init] of [
      ["/v1/conversations", {}],
      [
        "/v1/conversations",
        {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ participantIds: ["bob"] }),
        },
      ],
    ] as const) {
      const res = await callWith(db, path, init);
      expect(Number(res.headers.get("Retry-After"))).toBeGreaterThan(0);
      await expectCleanError(res, 503, "unavailable");
    }
  });

  it("answers 500 internal without SQL or driver text when a query is wrong", async () => {
    const db = failingDb(
      new Error("D1_ERROR: no such column: conversations.secret_column at offset 42: SQLITE_ERROR", {
        cause: new Error("no such column: conversations.secret_column at offset 42: SQLITE_ERROR"),
      }),
    );
    const res = await callWith(db, "/v1/conversations");
    const body = await expectCleanError(res, 500, "internal");
    expect(body).toEqual({ error: { code: "internal", message: "Internal error" } });
    expect(res.headers.get("Retry-After")).toBeNull();
  });
});

describe("a reply lost between the Worker and the room", () => {
  /**
   * The rooms as the Worker reaches them, except that the next `lose` sends fail as `lost` says: by default
   * carried out by the room and their replies then lost (the room restarting, or the connection dropping);
   * an overloaded room's refusal comes before the call runs.
   */
  function lossyRooms(
    lose: number,
    lost = () => Object.assign(new Error("Network connection lost."), { retryable: true }),
  ) {
    let left = lose;
    const rooms = {
      calls: 0,
      getByName(name: string) {
        const room = env.ROOMS.getByName(name);
        return {
          async sendMessage(input: Parameters<typeof room.sendMessage>[0]) {
            rooms.calls++;
            const error = left-- > 0 ? lost() : null;
            // An overloaded room refuses the call before running it; a lost reply comes after it ran.
            if (error && Reflect.get(error, "overloaded") === true) throw error;
            const result = await room.sendMessage(input);
            if (error) throw error;
            return result;
          },
        };
      },
    };
    return rooms as unknown as typeof env.ROOMS & { calls: number };
  }

  async function sendThrough(rooms: typeof env.ROOMS, conversationId: string, as: string, body: unknown) {
    const ctx = createExecutionContext();
    const res = await createApp(readLimits(env)).fetch(
      new Request(`https://chat.test/v1/conversations/${conversationId}/messages`, {
        method: "POST",
        headers: { Authorization: `Bearer ${await tokenFor(as)}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      }),
      withBindings(env, { ROOMS: rooms }),
      ctx,
    );
    await waitOnExecutionContext(ctx);
    return res;
  }

  it("stores a send without localId once: the Worker retries it itself, and answers 201", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const res = await sendThrough(lossyRooms(1), conv.id, alice, { content: "said once" });
    expect(res.status, await res.clone().text()).toBe(201);
    const message = (await res.json()) as MessageDto;
    expect(message).toMatchObject({ seq: 1, content: "said once", localId: null });
    expect((await storedMessages(conv.id)).map((m) => m.content)).toEqual(["said once"]);
    // The key the Worker gave it is its own: REST history shows no localId either.
    const history = (await (await call(`/v1/conversations/${conv.id}/messages`, { as: alice })).json()) as {
      messages: MessageDto[];
    };
    expect(history.messages.map((m) => m.localId)).toEqual([null]);
  });

  it("answers a send with a localId from its first attempt, stored once, when the reply was lost", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const res = await sendThrough(lossyRooms(1), conv.id, alice, { content: "mine", localId: "l-1" });
    expect([200, 201]).toContain(res.status);
    expect(((await res.json()) as MessageDto).localId).toBe("l-1");
    expect(await storedMessages(conv.id)).toHaveLength(1);
  });

  it("does not call an overloaded room again at once: 503, and the call made once", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const overloaded = () =>
      Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), {
        retryable: true,
        overloaded: true,
      });
    const rooms = lossyRooms(1, overloaded);
    const res = await sendThrough(rooms, conv.id, alice, { content: "busy" });
    await expectCleanError(res, 503, "unavailable");
    expect(rooms.calls).toBe(1);
    expect(await storedMessages(conv.id)).toEqual([]);
  });

  it("says 503 with outcome unknown when the retry is lost too, and the message is stored at most once", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const res = await sendThrough(lossyRooms(2), conv.id, alice, { content: "maybe" });
    expect(Number(res.headers.get("Retry-After"))).toBeGreaterThan(0);
    const body = (await expectCleanError(res, 503, "unavailable")) as { error: { details?: unknown } };
    expect(body.error.details).toEqual({ outcome: "unknown" });
    expect((await storedMessages(conv.id)).map((m) => m.content)).toEqual(["maybe"]);
  });
});

describe("toApiError and isStorageUnavailable", () => {
  it.each([
    "D1_ERROR: Network connection lost.",
    "D1_ERROR: D1 DB is overloaded. Too many requests queued.",
    "D1_ERROR: Internal error in D1 DB storage caused object to be reset.",
  ])("maps a platform failure to 503 unavailable: %s", (message) => {
    const err = new Error(message);
    expect(isStorageUnavailable(err)).toBe(true);
    const apiError = toApiError(err);
    expect(apiError).toBeInstanceOf(ApiError);
    expect(apiError).toMatchObject({ code: "unavailable", status: 503 });
    expect(apiError.retryAfter).toBeGreaterThan(0);
    expectNoLeak(JSON.stringify(apiError.toBody()));
  });

  it("recognises a platform failure carried as the cause", () => {
    const err = new Error("query failed", { cause: new Error("D1_ERROR: Network connection lost.") });
    expect(isStorageUnavailable(err)).toBe(true);
    expect(toApiError(err).code).toBe("unavailable");
  });

  it.each([
    "D1_ERROR: UNIQUE constraint failed: conversations.direct_key: SQLITE_CONSTRAINT",
    "D1_ERROR: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT",
    "D1_ERROR: no such table: conversation: SQLITE_ERROR",
    "D1_ERROR: too many SQL variables at offset 469: SQLITE_ERROR",
    "D1_TYPE_ERROR: Type 'object' not supported for value '[object Object]'",
  ])("maps a query that is wrong to 500 internal: %s", (message) => {
    const err = new Error(message);
    expect(isStorageUnavailable(err)).toBe(false);
    const apiError = toApiError(err);
    expect(apiError).toMatchObject({ code: "internal", status: 500, message: "Internal error" });
    expect(apiError.retryAfter).toBeUndefined();
    expect(JSON.stringify(apiError.toBody())).toBe('{"error":{"code":"internal","message":"Internal error"}}');
  });

  it.each([
    "D1_ERROR: string or blob too big: SQLITE_TOOBIG",
    "D1_ERROR: datatype mismatch: SQLITE_MISMATCH",
    "D1_ERROR: column index out of range: SQLITE_RANGE",
  ])("does not tell the client to retry a deterministic SQLite failure: %s", (message) => {
    // 503 promises "safe to retry"; these fail the same way every time, so they are a bug (500), not an outage.
    expect(isStorageUnavailable(new Error(message))).toBe(false);
    expect(toApiError(new Error(message)).code).toBe("internal");
  });

  it("maps any other error to 500 internal with the message 'Internal error'", () => {
    for (const err of [
      new TypeError("Cannot read properties of undefined (reading 'userId')"),
      new RangeError("Invalid time value"),
      "a string",
      { message: "D1_ERROR: Network connection lost." },
      undefined,
    ]) {
      const apiError = toApiError(err);
      expect(apiError).toMatchObject({ code: "internal", status: 500, message: "Internal error" });
      expect(apiError.toBody()).toEqual({ error: { code: "internal", message: "Internal error" } });
    }
  });

  it("passes an ApiError through unchanged", () => {
    const original = new ApiError("forbidden", "Only an owner can add participants");
    expect(toApiError(original)).toBe(original);
  });

  it("maps Hono's own failures to the catalogue", () => {
    expect(toApiError(new HTTPException(400, { message: "Malformed JSON in request body" }))).toMatchObject({
      code: "validation_failed",
      status: 400,
    });
    expect(toApiError(new HTTPException(415))).toMatchObject({ code: "validation_failed", status: 400 });
    expect(toApiError(new HTTPException(413))).toMatchObject({ code: "payload_too_large", status: 413 });
    expect(toApiError(new HTTPException(401))).toMatchObject({ code: "unauthenticated", status: 401 });
    expect(toApiError(new HTTPException(502, { message: "upstream said: SQLITE_BUSY" }))).toMatchObject({
      code: "internal",
      message: "Internal error",
    });
  });
});
