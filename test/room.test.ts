import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ConversationDto, MessageDto } from "../src/schemas";
import { d1Outage } from "./faults";
import {
  call,
  createConversation,
  eventually,
  expectError,
  projected,
  seedMessages,
  storedMessages,
  uniqueUser,
} from "./helpers";
import { connect, type TestSocket } from "./socket";

const room = (id: string) => env.ROOMS.getByName(id);

/** The seqs a socket was given, as messages or acks, in the order it got them. */
const seqsSeen = (s: TestSocket) =>
  s.frames.flatMap((f) => (f.type === "message" || f.type === "ack" ? [f.message.seq] : []));

async function sendRest(conversationId: string, as: string, content: string, localId?: string) {
  return call(`/v1/conversations/${conversationId}/messages`, { method: "POST", as, body: { content, localId } });
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The caller's list entry of the conversation, as GET /v1/conversations shows it. */
async function listed(conversationId: string, as: string) {
  const res = await call("/v1/conversations", { as });
  expect(res.status).toBe(200);
  const { conversations } = (await res.json()) as { conversations: ConversationDto[] };
  return conversations.find((c) => c.id === conversationId);
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
  // D1 is off the send path: the room stores, acks and broadcasts from its own storage, and D1's list only
  // learns the messages later. A D1 that has lost its connection delays the list; it fails no send.
  it("answers sends 201 while D1 is down, stores and broadcasts them gap-free, accepts the retry once, and the list catches up", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const watcher = await connect(conv.id, bob);
    expect((await sendRest(conv.id, alice, "before", "f0")).status).toBe(201);
    await watcher.next("message", (f) => f.message.seq === 1);
    await projected(conv.id);

    const d1 = await d1Outage(conv.id);
    const sent = await sendRest(conv.id, alice, "during", "f1");
    expect(sent.status, await sent.clone().text()).toBe(201);
    const message = (await sent.json()) as MessageDto;
    expect(message.seq).toBe(2);
    const retried = await sendRest(conv.id, alice, "during", "f1");
    expect(retried.status).toBe(200);
    expect(await retried.json()).toEqual(message);
    await watcher.next("message", (f) => f.message.seq === 2);
    expect(watcher.of("message").map((m) => m.message.seq)).toEqual([1, 2]);
    expect((await storedMessages(conv.id)).map((r) => r.seq)).toEqual([1, 2]);
    const history = await call(`/v1/conversations/${conv.id}/messages`, { as: bob });
    expect(((await history.json()) as { messages: MessageDto[] }).messages.map((m) => m.seq)).toEqual([2, 1]);

    // The pump tried D1 and failed: the list still shows the conversation as it was before.
    await eventually(() => d1.failures() > 0, 5_000, "a failed pump");
    expect(await listed(conv.id, bob)).toMatchObject({ lastSeq: 1, lastMessage: { seq: 1, preview: "before" } });

    await d1.restore();
    await projected(conv.id);
    expect(await listed(conv.id, bob)).toMatchObject({
      lastSeq: 2,
      lastMessage: { seq: 2, senderId: alice, preview: "during" },
      unreadCount: 2,
    });
    expect(await listed(conv.id, alice)).toMatchObject({ lastSeq: 2, unreadCount: 0 });
    expect(watcher.of("message").map((m) => m.message.seq)).toEqual([1, 2]);
    watcher.close();
  });

  it("acks a socket send while D1 is down, with no error frame, and the list catches up once D1 is back", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await projected(conv.id);
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    const d1 = await d1Outage(conv.id);
    a.send({ type: "send", localId: "sock-1", content: "x" });
    const ack = await a.next("ack");
    expect(ack).toMatchObject({ localId: "sock-1", message: { seq: 1, content: "x" } });
    a.send({ type: "send", localId: "sock-1", content: "x" });
    await a.until((s) => s.of("ack").length === 2);
    expect(a.of("ack")[1]?.message).toEqual(ack.message);
    expect(a.of("error")).toEqual([]);
    await b.next("message");
    expect(b.of("message")).toHaveLength(1);
    expect((await storedMessages(conv.id)).map((r) => r.localId)).toEqual(["sock-1"]);

    await eventually(() => d1.failures() > 0, 5_000, "a failed pump");
    expect(await listed(conv.id, alice)).toMatchObject({ lastSeq: 0, lastMessage: null });
    await d1.restore();
    await projected(conv.id);
    expect(await listed(conv.id, alice)).toMatchObject({ lastSeq: 1, lastMessage: { seq: 1, preview: "x" } });
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

  it("gives a socket catching up its whole replay first, then the edits made after it connected", async () => {
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
    // The replay is one pass: ready, every missed message in order (seq 1 as it was), then the edit.
    expect(b.frames.map((f) => f.type)).toEqual(["ready", ...range(1, 1000).map(() => "message"), "message_updated"]);
    expect(b.of("message")[0]?.message.content).toBe("bulk 1");
    b.close();
  });
});
