import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { readLimits } from "../src/env";
import type { MessageDto } from "../src/schemas";
import { call, createConversation, expectError, inRoomSql, tokenFor, uniqueUser } from "./helpers";
import { connect, type TestSocket, upgrade } from "./socket";

const messagesPath = (id: string) => `/v1/conversations/${id}/messages`;

const sendRest = (id: string, as: string, body: unknown) => call(messagesPath(id), { method: "POST", as, body });

/** The messages the room holds for the conversation (its system of record): the truth behind every acknowledgement. */
async function storedCount(conversationId: string): Promise<number> {
  return inRoomSql(conversationId, (sql) => sql.exec<{ n: number }>("SELECT count(*) AS n FROM messages").one().n);
}

async function history(conversationId: string, as: string): Promise<MessageDto[]> {
  const res = await call(messagesPath(conversationId), { as });
  expect(res.status).toBe(200);
  return ((await res.json()) as { messages: MessageDto[] }).messages;
}

/** Two users in a fresh conversation. */
async function pair() {
  const alice = uniqueUser("alice");
  const bob = uniqueUser("bob");
  const conv = await createConversation(alice, [bob]);
  return { alice, bob, conv };
}

/** Waits for the answer (ack or error) to the send frame with this localId. */
function answerTo(socket: TestSocket, localId: string) {
  return socket.until(
    (s) =>
      s.frames.find((f) => (f.type === "ack" && f.localId === localId) || (f.type === "error" && f.ref === localId)),
    5000,
    `the answer to ${localId}`,
  );
}

const EURO = "€"; // 1 UTF-16 unit, 3 bytes of UTF-8
const GRIN = "😀"; // 2 UTF-16 units (one code point), 4 bytes of UTF-8

describe("send rate limit", () => {
  it("answers a burst of 25 REST sends with 429 rate_limited and a Retry-After once the bucket of 20 is empty", async () => {
    const { alice, conv } = await pair();
    const responses = await Promise.all(
      Array.from({ length: 25 }, (_, i) => sendRest(conv.id, alice, { content: `burst ${i}`, localId: `b${i}` })),
    );
    const statuses = responses.map((r) => r.status);
    const created = statuses.filter((s) => s === 201).length;
    const limited = responses.filter((r) => r.status === 429);
    expect(
      statuses.every((s) => s === 201 || s === 429),
      JSON.stringify(statuses),
    ).toBe(true);
    // The bucket holds 20; refill (5/s) during the burst may let a few more through, never all of them.
    expect(created).toBeGreaterThanOrEqual(20);
    expect(created).toBeLessThan(25);
    expect(limited.length).toBe(25 - created);
    for (const res of limited) {
      expect(res.headers.get("Retry-After")).toMatch(/^[1-9]\d*$/);
      await expectError(res, 429, "rate_limited");
    }
    expect(await storedCount(conv.id)).toBe(created);
  });

  it("refuses socket sends over the rate with error frames naming the localId and a numeric retryAfterMs", async () => {
    const { alice, conv } = await pair();
    const a = await connect(conv.id, alice);
    const ids = Array.from({ length: 25 }, (_, i) => `s${i}`);
    for (const localId of ids) a.send({ type: "send", localId, content: `frame ${localId}` });
    const answers = await Promise.all(ids.map((id) => answerTo(a, id)));

    const acked = answers.filter((f) => f.type === "ack");
    const refused = answers.filter((f) => f.type === "error");
    expect(acked.length).toBeGreaterThanOrEqual(20);
    expect(acked.length).toBeLessThan(25);
    expect(refused.length).toBe(25 - acked.length);
    for (const frame of refused) {
      expect(frame).toEqual({
        type: "error",
        code: "rate_limited",
        message: expect.any(String),
        ref: expect.stringMatching(/^s\d+$/),
        retryAfterMs: expect.any(Number),
      });
      if (frame.type === "error") expect(frame.retryAfterMs).toBeGreaterThan(0);
    }
    expect(await storedCount(conv.id)).toBe(acked.length);
    const storedIds = (await history(conv.id, alice)).map((m) => m.localId).sort();
    expect(storedIds).toEqual(acked.map((f) => (f.type === "ack" ? f.localId : "")).sort());
    a.close();
  });

  it("closes a socket with 4429 after 50 rate-limited sends in a row", async () => {
    const { alice, bob, conv } = await pair();
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    for (let i = 0; i < 150; i++) a.send({ type: "send", localId: `abuse${i}`, content: `spam ${i}` });
    const closed = await a.waitClosed();
    expect(closed.code).toBe(4429);
    const refused = a.of("error").filter((f) => f.code === "rate_limited");
    expect(refused.length).toBeGreaterThanOrEqual(50);
    // The abuser's socket is gone; the conversation is not: another user is still served.
    b.send({ type: "send", localId: "after", content: "still here" });
    expect((await b.next("ack")).message.content).toBe("still here");
    b.close();
  });
});

describe("content limits over REST", () => {
  it("refuses empty, white-space-only and 4001-character content with 400, storing nothing", async () => {
    const { alice, conv } = await pair();
    for (const content of ["", "   ", " \n\t \r\n ", "a".repeat(4001), `${EURO.repeat(4001)}`]) {
      const body = await expectError(await sendRest(conv.id, alice, { content }), 400, "validation_failed");
      expect(body.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: "content" })]));
    }
    expect(await storedCount(conv.id)).toBe(0);
  });

  it("accepts 4000 characters, 4000 three-byte characters (12000 bytes) and 2000 emoji (length 4000)", async () => {
    const { alice, conv } = await pair();
    for (const content of ["a".repeat(4000), EURO.repeat(4000), GRIN.repeat(2000)]) {
      const res = await sendRest(conv.id, alice, { content });
      expect(res.status, await res.clone().text()).toBe(201);
      expect(((await res.json()) as MessageDto).content).toBe(content);
    }
    const stored = await history(conv.id, alice);
    expect(stored.map((m) => m.content)).toEqual([GRIN.repeat(2000), EURO.repeat(4000), "a".repeat(4000)]);
  });

  it("refuses content over 16 KiB of UTF-8 even when its character count is within the limit", async () => {
    // At the default 4000 characters no string reaches 16 KiB (at most 3 bytes per UTF-16 unit), so the byte
    // limit is checked with an app whose character limit was raised, as a deployment may do.
    const app = createApp(readLimits({ ...env, MAX_CONTENT_CHARS: "10000" }));
    const { alice, conv } = await pair();
    const token = await tokenFor(alice);
    const post = async (content: string) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request(`https://chat.test${messagesPath(conv.id)}`, {
          method: "POST",
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ content }),
        }),
        env,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return res;
    };
    // 4096 emoji: exactly 16384 bytes (length 8192): allowed. One more: 16388 bytes: refused.
    expect((await post(GRIN.repeat(4096))).status).toBe(201);
    await expectError(await post(GRIN.repeat(4097)), 400, "validation_failed");
    await expectError(await post(EURO.repeat(6000)), 400, "validation_failed"); // 18000 bytes, length 6000
    expect((await post(EURO.repeat(5000))).status).toBe(201); // 15000 bytes
    expect(await storedCount(conv.id)).toBe(2);
  });

  it("refuses a bad localId (a space, 65 characters) with 400, and accepts 64", async () => {
    const { alice, conv } = await pair();
    for (const localId of ["has space", "x".repeat(65), "", "semi;colon", "é"]) {
      const body = await expectError(
        await sendRest(conv.id, alice, { content: "hello", localId }),
        400,
        "validation_failed",
      );
      expect(body.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: "localId" })]));
    }
    expect(await storedCount(conv.id)).toBe(0);
    const ok = await sendRest(conv.id, alice, { content: "hello", localId: `${"A-z_9".repeat(12)}abcd` });
    expect(ok.status).toBe(201);
  });

  it("refuses unknown fields with 400 validation_failed naming them, storing nothing", async () => {
    const { alice, conv } = await pair();
    const body = await expectError(
      await sendRest(conv.id, alice, { content: "hello", localId: "u1", senderId: "someone-else", seq: 7 }),
      400,
      "validation_failed",
    );
    const paths = (body.error.details as { path: string }[]).map((d) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["senderId", "seq"]));
    expect(await storedCount(conv.id)).toBe(0);
  });

  it("refuses a body over 64 KiB with 413 payload_too_large, storing nothing", async () => {
    const { alice, conv } = await pair();
    const res = await call(messagesPath(conv.id), {
      method: "POST",
      as: alice,
      headers: { "Content-Type": "application/json" },
      rawBody: JSON.stringify({ content: "a".repeat(70_000) }),
    });
    await expectError(res, 413, "payload_too_large");
    // Just under the body limit the body is read and refused for its content, not for its size.
    const under = await sendRest(conv.id, alice, { content: "a".repeat(60_000) });
    await expectError(under, 400, "validation_failed");
    expect(await storedCount(conv.id)).toBe(0);
  });
});

describe("content limits over a socket", () => {
  it("refuses empty, white-space-only and too long content with validation_failed, ref = localId", async () => {
    const { alice, conv } = await pair();
    const a = await connect(conv.id, alice);
    const bad: [string, string][] = [
      ["empty", ""],
      ["blank", " \n\t "],
      ["long", "a".repeat(4001)],
      ["longeuro", EURO.repeat(4001)],
    ];
    for (const [localId, content] of bad) a.send({ type: "send", localId, content });
    for (const [localId] of bad) {
      expect(await answerTo(a, localId)).toEqual({
        type: "error",
        code: "validation_failed",
        message: expect.any(String),
        ref: localId,
      });
    }
    expect(a.closed).toBeUndefined();
    expect(await storedCount(conv.id)).toBe(0);

    const good: [string, string][] = [
      ["max", "a".repeat(4000)],
      ["euro", EURO.repeat(4000)],
      ["grin", GRIN.repeat(2000)],
    ];
    for (const [localId, content] of good) a.send({ type: "send", localId, content });
    for (const [localId, content] of good) {
      const answer = await answerTo(a, localId);
      expect(answer.type).toBe("ack");
      if (answer.type === "ack") expect(answer.message.content).toBe(content);
    }
    expect(await storedCount(conv.id)).toBe(3);
    a.close();
  });

  it("refuses a bad localId and unknown fields with validation_failed, storing nothing", async () => {
    const { alice, conv } = await pair();
    const a = await connect(conv.id, alice);
    a.send({ type: "send", localId: "has space", content: "hello" });
    a.send({ type: "send", localId: "y".repeat(65), content: "hello" });
    a.send({ type: "send", localId: "extra", content: "hello", senderId: "someone-else" });
    a.send({ type: "typing", typing: true, extra: 1 });
    const errors = await a.until((s) => s.of("error").length >= 4 && s.of("error"), 5000, "four errors");
    expect(errors.map((e) => e.code)).toEqual(Array(4).fill("validation_failed"));
    expect(errors[2]?.ref).toBe("extra");
    expect(a.closed).toBeUndefined();
    expect(await history(conv.id, alice)).toEqual([]);
    a.close();
  });

  it("refuses a non-JSON frame, an unknown type and missing fields with validation_failed, storing nothing", async () => {
    const { alice, bob, conv } = await pair();
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    a.send("this is not json");
    a.send("[1,2,3]");
    a.send({ type: "shout", content: "hello" });
    a.send({ type: "send", content: "no localId" });
    a.send({ type: "send", localId: "nocontent" });
    a.send({ content: "no type", localId: "notype" });
    a.send({ type: "read" });
    const errors = await a.until((s) => s.of("error").length >= 7 && s.of("error"), 5000, "seven errors");
    expect(errors.map((e) => e.code)).toEqual(Array(7).fill("validation_failed"));
    expect(errors[4]?.ref).toBe("nocontent");
    expect(a.closed).toBeUndefined();
    // A valid frame after them still works: the socket was not poisoned, and it is the only message stored.
    a.send({ type: "send", localId: "fine", content: "fine" });
    expect((await a.next("ack")).message.seq).toBe(1);
    expect((await b.next("message")).message.content).toBe("fine");
    expect(b.of("message")).toHaveLength(1);
    expect((await history(conv.id, alice)).map((m) => m.content)).toEqual(["fine"]);
    a.close();
    b.close();
  });

  it("closes the socket with 1009 on a frame over 32 KiB (counted in bytes), storing nothing", async () => {
    const { alice, conv } = await pair();
    const ascii = await connect(conv.id, alice);
    ascii.send({ type: "send", localId: "big", content: "a".repeat(33_000) });
    expect((await ascii.waitClosed()).code).toBe(1009);

    // 11000 three-byte characters: a .length of 11000 but 33000 bytes.
    const multibyte = await connect(conv.id, alice);
    multibyte.send({ type: "send", localId: "bigeuro", content: EURO.repeat(11_000) });
    expect((await multibyte.waitClosed()).code).toBe(1009);

    // Under the limit, an over-long content is an error frame and the socket stays open.
    const under = await connect(conv.id, alice);
    under.send({ type: "send", localId: "under", content: "a".repeat(30_000) });
    expect(await answerTo(under, "under")).toMatchObject({ type: "error", code: "validation_failed" });
    expect(under.closed).toBeUndefined();
    expect(await storedCount(conv.id)).toBe(0);
    under.close();
  });

  it("closes the socket with 1003 on a binary frame", async () => {
    const { alice, conv } = await pair();
    const a = await connect(conv.id, alice);
    a.ws.send(new TextEncoder().encode(JSON.stringify({ type: "send", localId: "bin", content: "binary" })));
    expect((await a.waitClosed()).code).toBe(1003);
    expect(a.of("ack")).toEqual([]);
    expect(await storedCount(conv.id)).toBe(0);
  });
});

describe("sockets per user", () => {
  it("answers the 11th socket of a user with 429, while another user can still connect", async () => {
    const { alice, bob, conv } = await pair();
    const sockets: TestSocket[] = [];
    for (let i = 0; i < 10; i++) sockets.push(await connect(conv.id, alice));
    await expectError(await upgrade(conv.id, alice), 429, "rate_limited");

    const b = await connect(conv.id, bob);
    expect(b.frames[0]).toMatchObject({ type: "ready", userId: bob });

    // The limit counts open sockets: once one is closed, there is room for one more.
    const first = sockets.shift();
    first?.close();
    await first?.waitClosed();
    const again = await upgrade(conv.id, alice);
    expect(again.status).toBe(101);
    again.webSocket?.accept();
    again.webSocket?.close(1000, "bye");
    for (const s of [...sockets, b]) s.close();
  });

  it("keeps the cap when 12 upgrades of one user arrive together: 10 open, 2 answered 429", async () => {
    const { alice, conv } = await pair();
    const responses = await Promise.all(Array.from({ length: 12 }, () => upgrade(conv.id, alice)));
    const opened = responses.filter((r) => r.status === 101);
    const refused = responses.filter((r) => r.status !== 101);
    expect(opened).toHaveLength(10);
    for (const res of refused) await expectError(res, 429, "rate_limited");
    for (const res of opened) {
      res.webSocket?.accept();
      res.webSocket?.close(1000, "bye");
    }
  });
});

describe("read marker and typing limits", () => {
  it("refuse a socket flooding typing and read frames, then close it with 4429, while the others' sends are acked", async () => {
    const { alice, bob, conv } = await pair();
    const flooder = uniqueUser("flooder");
    expect(
      (
        await call(`/v1/conversations/${conv.id}/participants`, {
          method: "POST",
          as: alice,
          body: { userIds: [flooder] },
        })
      ).status,
    ).toBe(200);
    expect((await sendRest(conv.id, alice, { content: "first", localId: "first" })).status).toBe(201);
    const sender = await connect(conv.id, alice);
    const watcher = await connect(conv.id, bob);
    const flood = await connect(conv.id, flooder);

    const started = Date.now();
    // As fast as the socket takes them: every typing frame a change, every read frame a marker write.
    for (let i = 0; i < 1000; i++) {
      flood.send(i % 2 === 0 ? { type: "typing", typing: i % 4 === 0 } : { type: "read", seq: 1 });
    }
    // Meanwhile another participant chats as usual: every send is acked, none refused.
    for (let i = 0; i < 10; i++) {
      sender.send({ type: "send", localId: `normal-${i}`, content: `normal ${i}` });
      const answer = await answerTo(sender, `normal-${i}`);
      expect(answer.type, JSON.stringify(answer)).toBe("ack");
    }
    expect((await flood.waitClosed()).code).toBe(4429);
    const seconds = (Date.now() - started) / 1000;
    const limits = readLimits(env);

    const refused = flood.of("error");
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((f) => f.code === "rate_limited" && (f.retryAfterMs ?? 0) > 0)).toBe(true);
    // What reached the others is bounded by the bucket, not by the flood.
    const fannedOut = watcher.of("typing").filter((f) => f.userId === flooder).length;
    expect(fannedOut).toBeLessThanOrEqual(limits.signalBucketSize + Math.ceil(limits.signalRefillPerSecond * seconds));
    expect(watcher.of("message").map((f) => f.message.content)).toEqual(
      Array.from({ length: 10 }, (_, i) => `normal ${i}`),
    );
    for (const s of [sender, watcher]) s.close();
  });

  it("answer REST read markers and typing past the bucket with 429 and a Retry-After, sharing one bucket", async () => {
    const { alice, conv } = await pair();
    const { signalBucketSize } = readLimits(env);
    const statuses: number[] = [];
    let limited: Response | undefined;
    for (let i = 0; i < signalBucketSize + 5 && !limited; i++) {
      const res =
        i % 2 === 0
          ? await call(`/v1/conversations/${conv.id}/typing`, {
              method: "POST",
              as: alice,
              body: { typing: i % 4 === 0 },
            })
          : await call(`/v1/conversations/${conv.id}/read`, { method: "POST", as: alice, body: { seq: 0 } });
      statuses.push(res.status);
      if (res.status === 429) limited = res;
    }
    expect(limited, JSON.stringify(statuses)).toBeDefined();
    await expectError(limited as Response, 429, "rate_limited");
    expect(Number(limited?.headers.get("Retry-After"))).toBeGreaterThan(0);
    // Refill counted, the bucket let through about its size, never all of them.
    expect(statuses.filter((s) => s !== 429).length).toBeGreaterThanOrEqual(signalBucketSize);
  });
});

describe("creation and participant-change limits", () => {
  it("refuse new conversations past the creator's bucket with 429 and a Retry-After; others still create", async () => {
    const owner = uniqueUser("creator");
    const { createBucketSize } = readLimits(env);
    const statuses: number[] = [];
    for (let i = 0; i <= createBucketSize; i++) {
      const res = await call("/v1/conversations", {
        method: "POST",
        as: owner,
        body: { participantIds: [uniqueUser()] },
      });
      statuses.push(res.status);
    }
    expect(statuses.slice(0, createBucketSize).every((s) => s === 201)).toBe(true);
    const refused = await call("/v1/conversations", {
      method: "POST",
      as: owner,
      body: { participantIds: [uniqueUser()] },
    });
    await expectError(refused, 429, "rate_limited");
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThan(0);
    // Per user: someone else is not held back.
    expect((await createConversation(uniqueUser("other"), [uniqueUser()])).id).toEqual(expect.any(String));
  });

  it("refuse participant changes past the actor's bucket, across conversations, changing nothing", async () => {
    const owner = uniqueUser("owner");
    const { membershipBucketSize } = readLimits(env);
    const groups = [await createConversation(owner, [uniqueUser()]), await createConversation(owner, [uniqueUser()])];
    for (let i = 0; i < membershipBucketSize; i++) {
      const group = groups[i % 2] as { id: string };
      const res = await call(`/v1/conversations/${group.id}/participants`, {
        method: "POST",
        as: owner,
        body: { userIds: [uniqueUser(`p${i}`)] },
      });
      expect(res.status, await res.text()).toBe(200);
    }
    const group = groups[0] as { id: string };
    const before = (await (await call(`/v1/conversations/${group.id}`, { as: owner })).json()) as {
      participants: unknown[];
    };
    const late = uniqueUser("late");
    const refused = await call(`/v1/conversations/${group.id}/participants`, {
      method: "POST",
      as: owner,
      body: { userIds: [late] },
    });
    await expectError(refused, 429, "rate_limited");
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThan(0);
    const after = (await (await call(`/v1/conversations/${group.id}`, { as: owner })).json()) as {
      participants: unknown[];
    };
    expect(after.participants).toEqual(before.participants);
    await expectError(await call(`/v1/conversations/${group.id}`, { as: late }), 404, "not_found");
  });
});
