import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { describe, expect, it } from "vitest";
import type { ConversationRoom } from "../src/room";
import type { MessageDto } from "../src/schemas";
import { call, createConversation, expectError, seedMessages, uniqueUser } from "./helpers";
import { connect, type TestSocket } from "./socket";

const room = (id: string) => env.ROOMS.getByName(id);

/** The seqs a socket was given, as messages or acks, in the order it got them. */
const seqsSeen = (s: TestSocket) =>
  s.frames.flatMap((f) => (f.type === "message" || f.type === "ack" ? [f.message.seq] : []));

async function storedMessages(conversationId: string) {
  const { results } = await env.DB.prepare(
    "SELECT seq, sender_id AS senderId, local_id AS localId, content FROM messages WHERE conversation_id = ? ORDER BY seq",
  )
    .bind(conversationId)
    .all<{ seq: number; senderId: string; localId: string | null; content: string }>();
  return results;
}

async function sendRest(conversationId: string, as: string, content: string, localId?: string) {
  return call(`/v1/conversations/${conversationId}/messages`, { method: "POST", as, body: { content, localId } });
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Makes the room's next D1 batch fail as D1 does when it loses its connection. */
async function failNextBatch(conversationId: string) {
  await runInDurableObject(room(conversationId), (instance: ConversationRoom) => {
    let armed = true;
    const real = env.DB;
    const flaky = {
      prepare: (query: string) => real.prepare(query),
      exec: (query: string) => real.exec(query),
      batch: async (statements: D1PreparedStatement[]) => {
        if (armed) {
          armed = false;
          throw new Error("D1_ERROR: Network connection lost.");
        }
        return real.batch(statements);
      },
    } as unknown as D1Database;
    instance.db = drizzle(flaky);
  });
}

describe("ordering under concurrency", () => {
  it("gives 400 concurrent sends from 20 sockets gap-free seqs, one order for every receiver, and one row per ack", {
    timeout: 60_000,
  }, async () => {
    const users = Array.from({ length: 20 }, () => uniqueUser("crowd"));
    const [owner, ...rest] = users as [string, ...string[]];
    const conv = await createConversation(owner, rest);
    const sockets = await Promise.all(users.map((u) => connect(conv.id, u)));

    sockets.forEach((s, i) => {
      for (let n = 0; n < 20; n++) s.send({ type: "send", localId: `s${i}-m${n}`, content: `from ${i}: ${n}` });
    });
    await Promise.all(sockets.map((s) => s.until((x) => seqsSeen(x).length >= 400, 50_000, "400 messages")));

    for (const s of sockets) {
      expect(seqsSeen(s)).toEqual(range(1, 400));
      expect(s.of("ack")).toHaveLength(20);
      expect(s.of("error")).toEqual([]);
    }
    // Every receiver saw the same message at each seq.
    const bySeq = (s: TestSocket) =>
      Object.fromEntries(
        s.frames.flatMap((f) => (f.type === "message" || f.type === "ack" ? [[f.message.seq, f.message.id]] : [])),
      );
    const first = bySeq(sockets[0] as TestSocket);
    for (const s of sockets) expect(bySeq(s)).toEqual(first);

    const rows = await storedMessages(conv.id);
    expect(rows.map((r) => r.seq)).toEqual(range(1, 400));
    const acked = sockets.flatMap((s) => s.of("ack").map((a) => `${a.message.senderId}/${a.localId}/${a.message.seq}`));
    expect(new Set(acked)).toEqual(new Set(rows.map((r) => `${r.senderId}/${r.localId}/${r.seq}`)));

    const res = await call(`/v1/conversations/${conv.id}`, { as: owner });
    expect(((await res.json()) as { lastSeq: number }).lastSeq).toBe(400);
    for (const s of sockets) s.close();
  });
});

describe("idempotency", () => {
  it("answers a REST retry with the original, and other content with 409", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const first = await sendRest(conv.id, alice, "hello", "retry-1");
    expect(first.status).toBe(201);
    const original = (await first.json()) as MessageDto;
    const again = await sendRest(conv.id, alice, "hello", "retry-1");
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual(original);
    await expectError(await sendRest(conv.id, alice, "other", "retry-1"), 409, "idempotency_conflict");
    // The same localId is another user's own to use.
    expect((await sendRest(conv.id, bob, "hello", "retry-1")).status).toBe(201);
    expect((await storedMessages(conv.id)).map((r) => r.seq)).toEqual([1, 2]);
  });

  it("gives one message for a localId resent on a socket, over REST and after a reconnect", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const watcher = await connect(conv.id, bob);
    const a = await connect(conv.id, alice);
    a.send({ type: "send", localId: "dup", content: "once" });
    a.send({ type: "send", localId: "dup", content: "once" });
    await a.until((s) => s.of("ack").length === 2);
    const [ack1, ack2] = a.of("ack");
    expect(ack2?.message).toEqual(ack1?.message);

    const rest = await sendRest(conv.id, alice, "once", "dup");
    expect(rest.status).toBe(200);
    expect(((await rest.json()) as MessageDto).id).toBe(ack1?.message.id);

    a.close();
    const again = await connect(conv.id, alice, { since: 1 });
    again.send({ type: "send", localId: "dup", content: "once" });
    const ack3 = await again.next("ack");
    expect(ack3.message.id).toBe(ack1?.message.id);
    again.send({ type: "send", localId: "dup", content: "changed" });
    const refused = await again.next("error");
    expect(refused).toMatchObject({ code: "idempotency_conflict", ref: "dup" });

    // The watcher got the message once, and nothing for the retries.
    await watcher.until(() => true);
    expect(watcher.of("message").map((m) => m.message.seq)).toEqual([1]);
    expect(await storedMessages(conv.id)).toHaveLength(1);
    watcher.close();
    again.close();
  });
});

describe("storage failure", () => {
  it("answers 503 with nothing stored or broadcast, keeps seq gap-free, and accepts the retry once", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const watcher = await connect(conv.id, bob);
    expect((await sendRest(conv.id, alice, "before", "f0")).status).toBe(201);
    await watcher.next("message", (f) => f.message.seq === 1);

    await failNextBatch(conv.id);
    const failed = await sendRest(conv.id, alice, "during", "f1");
    await expectError(failed, 503, "unavailable");
    expect(failed.headers.get("Retry-After")).toBe("1");
    expect((await storedMessages(conv.id)).map((r) => r.seq)).toEqual([1]);

    const retried = await sendRest(conv.id, alice, "during", "f1");
    expect(retried.status).toBe(201);
    expect(((await retried.json()) as MessageDto).seq).toBe(2);
    expect((await sendRest(conv.id, alice, "during", "f1")).status).toBe(200);
    await watcher.next("message", (f) => f.message.seq === 2);
    expect(watcher.of("message").map((m) => m.message.seq)).toEqual([1, 2]);
    expect((await storedMessages(conv.id)).map((r) => r.seq)).toEqual([1, 2]);
    watcher.close();
  });

  it("answers a socket send with an unavailable error frame when D1 fails", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    await failNextBatch(conv.id);
    a.send({ type: "send", localId: "sock-1", content: "x" });
    expect(await a.next("error")).toMatchObject({ code: "unavailable", ref: "sock-1" });
    a.send({ type: "send", localId: "sock-1", content: "x" });
    expect((await a.next("ack")).message.seq).toBe(1);
    await b.next("message");
    expect(b.of("message")).toHaveLength(1);
    a.close();
    b.close();
  });
});

describe("eviction and restarts", () => {
  it("keeps hibernated sockets working and seq continuing after an eviction", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    a.send({ type: "send", localId: "e1", content: "one" });
    await b.next("message", (f) => f.message.seq === 1);

    await evictDurableObject(room(conv.id), { webSockets: "hibernate" });
    a.send({ type: "send", localId: "e2", content: "two" });
    expect((await a.next("ack", (f) => f.localId === "e2")).message.seq).toBe(2);
    expect((await b.next("message", (f) => f.message.seq === 2)).message.content).toBe("two");
    b.send({ type: "send", localId: "e3", content: "three" });
    expect((await a.next("message", (f) => f.message.seq === 3)).message.senderId).toBe(bob);
    expect(a.closed).toBeUndefined();
    a.close();
    b.close();
  });

  it("replays exactly the missed messages to a client reconnecting with since after a restart", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const b = await connect(conv.id, bob);
    for (const n of [1, 2, 3]) expect((await sendRest(conv.id, alice, `m${n}`, `r${n}`)).status).toBe(201);
    await b.next("message", (f) => f.message.seq === 3);

    await evictDurableObject(room(conv.id), { webSockets: "close" });
    await b.waitClosed();
    for (const n of [4, 5, 6, 7]) expect((await sendRest(conv.id, alice, `m${n}`, `r${n}`)).status).toBe(201);

    const back = await connect(conv.id, bob, { since: 3 });
    expect(back.frames[0]).toMatchObject({ type: "ready", lastSeq: 7 });
    await back.until((s) => s.of("message").length >= 4);
    expect((await sendRest(conv.id, alice, "m8", "r8")).status).toBe(201);
    await back.next("message", (f) => f.message.seq === 8);
    expect(back.of("message").map((m) => m.message.content)).toEqual(["m4", "m5", "m6", "m7", "m8"]);
    back.close();
  });

  it("sends resync instead of a replay when more than 1000 messages were missed", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await seedMessages(conv.id, alice, 1200);
    const far = await connect(conv.id, bob, { since: 100 });
    expect(await far.next("resync")).toEqual({ type: "resync", fromSeq: 100 });
    const near = await connect(conv.id, bob, { since: 200 });
    await near.until((s) => s.of("message").length >= 1000, 10_000);
    expect(near.of("message").map((m) => m.message.seq)).toEqual(range(201, 1200));
    expect(near.of("resync")).toEqual([]);
    // Both are live afterwards.
    expect((await sendRest(conv.id, alice, "after", "after-bulk")).status).toBe(201);
    for (const s of [far, near])
      expect((await s.next("message", (f) => f.message.seq === 1201)).message.content).toBe("after");
    far.close();
    near.close();
  });

  it("tells a socket that is still catching up about edits made meanwhile, after its replay", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await seedMessages(conv.id, alice, 1000);
    const b = await connect(conv.id, bob, { since: 0 });
    const edit = await call(`/v1/conversations/${conv.id}/messages/1`, {
      method: "PATCH",
      as: alice,
      body: { content: "edited during the replay" },
    });
    expect(edit.status).toBe(200);
    const updated = await b.next("message_updated", (f) => f.message.seq === 1, 0);
    expect(updated.message.content).toBe("edited during the replay");
    await b.until((s) => s.of("message").length >= 1000, 10_000);
    expect(b.of("message").map((m) => m.message.seq)).toEqual(range(1, 1000));
    const replayed = b.frames.findIndex((f) => f.type === "message" && f.message.seq === 1);
    expect(b.frames.indexOf(updated)).toBeGreaterThan(replayed);
    b.close();
  });
});
