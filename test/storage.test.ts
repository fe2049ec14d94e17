import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { describe, expect, it } from "vitest";
import { insertConversation } from "../src/db/conversations";
import { applyProjection } from "../src/db/projection";
import { contentHash } from "../src/domain/messages";
import { PUMP_COALESCE_MS } from "../src/room/outbox";
import type { ConversationRoom } from "../src/room/room";
import { SCHEMA_VERSION } from "../src/room/schema";
import type { ConversationDto, MessageDto } from "../src/schemas";
import { recordD1 } from "./d1-recorder";
import { d1Outage } from "./faults";
import {
  call,
  createConversation,
  eventually,
  inRoomSql,
  projected,
  roomStub,
  seedLegacyMessages,
  seedMessages,
  storedMessages,
  uniqueUser,
} from "./helpers";
import { connect } from "./socket";

const send = (id: string, as: string, content: string, localId?: string) =>
  call(`/v1/conversations/${id}/messages`, { method: "POST", as, body: { content, localId } });

async function listEntry(userId: string, conversationId: string): Promise<ConversationDto | undefined> {
  const res = await call("/v1/conversations?limit=100", { as: userId });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { conversations: ConversationDto[] };
  return body.conversations.find((c) => c.id === conversationId);
}

async function allMessages(id: string, as: string): Promise<MessageDto[]> {
  const all: MessageDto[] = [];
  for (let after = 0; ; ) {
    const res = await call(`/v1/conversations/${id}/messages?after=${after}&limit=100`, { as });
    expect(res.status).toBe(200);
    const page = (await res.json()) as { messages: MessageDto[]; hasMore: boolean };
    all.push(...page.messages);
    if (!page.hasMore) return all;
    after = page.messages.at(-1)?.seq ?? after;
  }
}

describe("the room's storage", () => {
  it("is at the current schema version once the room has woken", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const version = await inRoomSql(
      conv.id,
      (sql) => sql.exec("SELECT value FROM meta WHERE key = 'schema_version'").one().value,
    );
    expect(Number(version)).toBe(SCHEMA_VERSION);
  });

  it("migrates itself from the previous schema version, keeping its data", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    expect(
      (await call(`/v1/conversations/${conv.id}/participants/${bob}`, { method: "DELETE", as: alice })).status,
    ).toBe(204);
    // Back to version 1 as it was: `departed` without the rev that the inbox feed reads nor the read marker
    // of one who left, no lagging inboxes.
    await inRoomSql(conv.id, (sql) => {
      sql.exec("ALTER TABLE departed DROP COLUMN rev");
      sql.exec("ALTER TABLE departed DROP COLUMN last_read_seq");
      sql.exec("DROP TABLE inbox_lagging");
      sql.exec("UPDATE meta SET value = 1 WHERE key = 'schema_version'");
    });
    await evictDurableObject(roomStub(conv.id));
    const after = await inRoomSql(conv.id, (sql) => ({
      version: Number(sql.exec("SELECT value FROM meta WHERE key = 'schema_version'").one().value),
      departed: sql.exec("SELECT user_id AS userId, rev, last_read_seq AS lastReadSeq FROM departed").toArray(),
      lagging: sql.exec("SELECT count(*) AS n FROM inbox_lagging").one().n,
    }));
    expect(after).toEqual({
      version: SCHEMA_VERSION,
      departed: [{ userId: bob, rev: 0, lastReadSeq: null }],
      lagging: 0,
    });
    // The repeated removal is still answered, from the migrated table.
    expect(
      (await call(`/v1/conversations/${conv.id}/participants/${bob}`, { method: "DELETE", as: alice })).status,
    ).toBe(204);
  });

  it("knows its conversation by its name, also after hibernation", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    const socket = await connect(conv.id, alice);
    await evictDurableObject(roomStub(conv.id), { webSockets: "hibernate" });
    const names = await runInDurableObject(roomStub(conv.id), (instance: ConversationRoom, state) => [
      state.id.name,
      instance.conversationId,
    ]);
    expect(names).toEqual([conv.id, conv.id]);
    socket.send({ type: "send", localId: "after-wake", content: "still here" });
    const ack = await socket.next("ack");
    expect(ack.message.conversationId).toBe(conv.id);
  });
});

describe("D1 is the directory, off the write path", () => {
  it("keeps sends, edits, deletes, reads, history and sockets working while D1 fails, and the list catches up after", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    await projected(conv.id);
    const outage = await d1Outage(conv.id);
    const bobSocket = await connect(conv.id, bob);

    for (const [i, content] of ["one", "two", "three"].entries()) {
      expect((await send(conv.id, alice, content, `a-${i}`)).status).toBe(201);
    }
    const edit = await call(`/v1/conversations/${conv.id}/messages/1`, {
      method: "PATCH",
      as: alice,
      body: { content: "uno" },
    });
    expect(edit.status).toBe(200);
    expect((await call(`/v1/conversations/${conv.id}/messages/2`, { method: "DELETE", as: alice })).status).toBe(200);
    const read = await call(`/v1/conversations/${conv.id}/read`, { method: "POST", as: bob, body: { seq: 3 } });
    expect(read.status).toBe(200);
    bobSocket.send({ type: "send", localId: "b-1", content: "four" });
    expect((await bobSocket.next("ack")).message.seq).toBe(4);
    expect((await allMessages(conv.id, bob)).map((m) => [m.seq, m.content])).toEqual([
      [1, "uno"],
      [2, ""],
      [3, "three"],
      [4, "four"],
    ]);
    expect(bobSocket.of("message").map((f) => f.message.seq)).toEqual([1, 2, 3]);
    expect(bobSocket.of("message_updated").map((f) => f.message.seq)).toEqual([1, 2]);

    // The pump tried and failed; the list still has the state from before the outage.
    await eventually(() => outage.failures() > 0, 5_000, "a failed pump");
    expect((await listEntry(bob, conv.id))?.lastSeq).toBe(0);

    await outage.restore();
    await runDurableObjectAlarm(roomStub(conv.id));
    await projected(conv.id);
    const entry = await listEntry(alice, conv.id);
    expect(entry?.lastSeq).toBe(4);
    expect(entry?.lastMessage).toMatchObject({ seq: 4, senderId: bob, preview: "four" });
    expect(entry?.participants.find((p) => p.userId === bob)?.lastReadSeq).toBe(4);
    expect(entry?.unreadCount).toBe(1);
    expect(entry).toEqual(await (await call(`/v1/conversations/${conv.id}`, { as: alice })).json());
  });

  it("delivers the outbox after an eviction that came before the pump", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    await projected(conv.id);
    await d1Outage(conv.id);
    expect((await send(conv.id, alice, "kept", "k-1")).status).toBe(201);
    await evictDurableObject(roomStub(conv.id), { webSockets: "close" });
    // A new instance, with the real D1: what the outbox held is still due.
    expect(await inRoomSql(conv.id, (sql) => sql.exec("SELECT count(*) AS n FROM outbox").one().n)).toBeGreaterThan(0);
    await runDurableObjectAlarm(roomStub(conv.id));
    await projected(conv.id);
    expect((await listEntry(alice, conv.id))?.lastMessage?.preview).toBe("kept");
    expect(await inRoomSql(conv.id, (sql) => sql.exec("SELECT count(*) AS n FROM outbox").one().n)).toBe(0);
  });

  it("delivers the outbox from a cold alarm, woken through an id string, under its conversation's id", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    await projected(conv.id);
    await d1Outage(conv.id);
    expect((await send(conv.id, alice, "woken by the alarm", "w-1")).status).toBe(201);
    await evictDurableObject(roomStub(conv.id), { webSockets: "close" });
    // The alarm is the first thing the new instance runs, through a stub made from the id alone (workerd#6850
    // reports alarms without `ctx.id.name` in production; workerd here keeps the name, and the room falls back to
    // its conversation row's id, so both must agree).
    const fromString = env.ROOMS.get(env.ROOMS.idFromString(roomStub(conv.id).id.toString()));
    expect(await runDurableObjectAlarm(fromString)).toBe(true);
    const names = await runInDurableObject(fromString, (instance: ConversationRoom, state) => [
      state.id.name,
      instance.conversationId,
      state.storage.sql.exec("SELECT id FROM conversation").one().id,
    ]);
    expect(names).toEqual([conv.id, conv.id, conv.id]);
    await projected(conv.id);
    expect((await listEntry(alice, conv.id))?.lastMessage?.preview).toBe("woken by the alarm");
  });

  it("never moves the list back: an older projection is ignored", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")], { title: "New title" });
    expect((await send(conv.id, alice, "latest")).status).toBe(201);
    await projected(conv.id);
    const before = await env.DB.prepare("SELECT * FROM conversations WHERE id = ?").bind(conv.id).first();
    await applyProjection(drizzle(env.DB), {
      conversationId: conv.id,
      version: Number(before?.projected_version) - 1,
      title: "Old title",
      updatedAt: 1,
      lastSeq: 0,
      lastMessageSenderId: null,
      lastMessagePreview: null,
      lastMessageAt: null,
      members: [],
    });
    expect(await env.DB.prepare("SELECT * FROM conversations WHERE id = ?").bind(conv.id).first()).toEqual(before);
    expect((await listEntry(alice, conv.id))?.participants).toHaveLength(2);
  });

  it("does not reorder the list for a retry: only a new message moves its activity", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    expect((await send(conv.id, alice, "hello", "h-1")).status).toBe(201);
    await projected(conv.id);
    const before = await listEntry(alice, conv.id);
    await new Promise((r) => setTimeout(r, 20));
    expect((await send(conv.id, alice, "hello", "h-1")).status).toBe(200);
    await projected(conv.id);
    expect(await listEntry(alice, conv.id)).toEqual(before);
  });
});

describe("membership through the room", () => {
  it("closes a removed user's sockets before anything later, refuses them, and has D1 updated when the DELETE returns", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    const bobSocket = await connect(conv.id, bob);
    const res = await call(`/v1/conversations/${conv.id}/participants/${bob}`, { method: "DELETE", as: alice });
    expect(res.status).toBe(204);
    const inD1 = await env.DB.prepare("SELECT user_id FROM participants WHERE conversation_id = ? AND user_id = ?")
      .bind(conv.id, bob)
      .first();
    expect(inD1).toBeNull();
    expect((await send(conv.id, alice, "after the removal")).status).toBe(201);
    expect((await bobSocket.waitClosed()).code).toBe(4403);
    expect(bobSocket.of("message")).toEqual([]);
    expect((await send(conv.id, bob, "let me in")).status).toBe(404);
  });

  it("removes in the room while D1 is down, and a repeated removal repairs D1", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    await projected(conv.id);
    const outage = await d1Outage(conv.id);
    const path = `/v1/conversations/${conv.id}/participants/${bob}`;
    expect((await call(path, { method: "DELETE", as: alice })).status).toBe(204);
    expect((await call(`/v1/conversations/${conv.id}`, { as: bob })).status).toBe(404);
    expect(await listEntry(bob, conv.id)).toBeDefined(); // D1 could not be told yet
    await outage.restore();
    expect((await call(path, { method: "DELETE", as: alice })).status).toBe(204);
    expect(await listEntry(bob, conv.id)).toBeUndefined();
    expect((await listEntry(alice, conv.id))?.participants.map((p) => p.userId)).toEqual([alice]);
  });
});

describe("catching up reads local storage in one pass", () => {
  it("replays everything before an ack of a send made at once, exactly once, in order", async () => {
    const alice = uniqueUser("alice");
    const conv = await createConversation(alice, [uniqueUser("bob")]);
    await seedMessages(conv.id, alice, 300);
    const socket = await connect(conv.id, alice, { since: 0 });
    socket.send({ type: "send", localId: "right-away", content: "now" });
    await socket.next("ack");
    const seqs = socket.frames.flatMap((f) => (f.type === "message" || f.type === "ack" ? [f.message.seq] : []));
    expect(seqs).toEqual(Array.from({ length: 301 }, (_, i) => i + 1));
  });
});

describe("upgrading from 0.1", () => {
  it("imports a 0.1 conversation's messages and markers from D1 in pages before serving, resuming a partial import", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const id = `legacy${crypto.randomUUID().replaceAll("-", "")}`;
    const db = drizzle(env.DB);
    // As 0.1 wrote it: the conversation, its participants and its messages in D1.
    await insertConversation(db, {
      id,
      title: "From 0.1",
      direct: false,
      directKey: null,
      createdBy: alice,
      memberIds: [bob],
      now: 1,
    });
    await seedLegacyMessages(id, alice, 1200);
    await env.DB.prepare(
      `INSERT INTO messages (id, conversation_id, seq, sender_id, content, local_id, sent_hash, created_at, edited_at)
       VALUES (?, ?, 1201, ?, 'edited later', 'l-1', ?, 2, 3)`,
    )
      .bind(`${id}-l`, id, bob, await contentHash("as first sent"))
      .run();
    await env.DB.batch([
      env.DB.prepare("UPDATE conversations SET last_seq = 1201 WHERE id = ?").bind(id),
      env.DB.prepare("UPDATE participants SET last_read_seq = 1000 WHERE conversation_id = ? AND user_id = ?").bind(
        id,
        bob,
      ),
    ]);
    // The 0.1 room had kept delivered markers not yet in D1, and had imported nothing; say a first page was
    // imported before an eviction.
    await runInDurableObject(roomStub(id), (_i: ConversationRoom, state) => {
      state.storage.kv.put("conversationId", id);
      state.storage.kv.put("delivered", { markers: { [bob]: 1100 }, notify: [alice] });
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO messages (seq, id, sender_id, content, created_at) SELECT i, ?1 || '-' || i, ?2, 'bulk ' || i, 1 FROM n`,
        id,
        alice,
      );
    });

    const messages = await allMessages(id, bob);
    expect(messages.map((m) => m.seq)).toEqual(Array.from({ length: 1201 }, (_, i) => i + 1));
    expect(messages[9]).toMatchObject({ id: `${id}-10`, content: "bulk 10", senderId: alice });
    const conversation = (await (await call(`/v1/conversations/${id}`, { as: bob })).json()) as ConversationDto;
    expect(conversation).toMatchObject({ title: "From 0.1", lastSeq: 1201, unreadCount: 201 });
    expect(conversation.participants.find((p) => p.userId === bob)).toMatchObject({
      lastReadSeq: 1000,
      lastDeliveredSeq: 1100,
    });
    const kvLeft = await runInDurableObject(roomStub(id), (_i: ConversationRoom, state) => [
      ...state.storage.kv.list({ prefix: "" }),
    ]);
    expect(kvLeft.map(([k]) => k).filter((k) => k !== "typing")).toEqual([]);

    // A 0.1 localId stays a retry: the same content as first sent gets the original, other content 409.
    const retry = await send(id, bob, "as first sent", "l-1");
    expect(retry.status).toBe(200);
    expect(((await retry.json()) as MessageDto).seq).toBe(1201);
    expect((await send(id, bob, "something else", "l-1")).status).toBe(409);
    expect(((await (await send(id, alice, "new")).json()) as MessageDto).seq).toBe(1202);
    expect((await storedMessages(id)).length).toBe(1202);
  });

  it("continues a 0.1 conversation's rev, so that a copy loaded before the import never looks newer", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const id = `legacy${crypto.randomUUID().replaceAll("-", "")}`;
    await insertConversation(drizzle(env.DB), {
      id,
      title: "From 0.1",
      direct: false,
      directKey: null,
      createdBy: alice,
      memberIds: [bob],
      now: 1,
    });
    // 0.1 counted every change of the conversation in D1's rev.
    await env.DB.prepare("UPDATE conversations SET rev = 57 WHERE id = ?").bind(id).run();
    const before = await listEntry(bob, id);
    expect(before?.rev).toBe(57);

    expect((await send(id, alice, "the first since 0.1")).status).toBe(201);
    const inRoom = (await (await call(`/v1/conversations/${id}`, { as: bob })).json()) as ConversationDto;
    expect(inRoom.rev).toBeGreaterThan(57);
    await projected(id);
    expect((await listEntry(bob, id))?.rev).toBe(inRoom.rev);
  });

  it("answers 404 for an id that is in neither the room nor the directory, and stores nothing", async () => {
    const id = `nothing${crypto.randomUUID().replaceAll("-", "")}`;
    expect((await call(`/v1/conversations/${id}`, { as: uniqueUser("x") })).status).toBe(404);
    expect(await inRoomSql(id, (sql) => sql.exec("SELECT count(*) AS n FROM conversation").one().n)).toBe(0);
  });
});

describe("writes per message (figures of the write path)", () => {
  /** Counts the rows the room's statements write, and the D1 statements its pump sends, from now on. */
  async function countWrites(conversationId: string) {
    const cursors: { rowsWritten: number }[] = [];
    const d1 = recordD1(env.DB);
    await runInDurableObject(roomStub(conversationId), (instance: ConversationRoom, state) => {
      const sql = state.storage.sql;
      const exec = sql.exec.bind(sql);
      (sql as unknown as { exec: (query: string, ...bindings: unknown[]) => unknown }).exec = (query, ...bindings) => {
        const cursor = exec(query, ...bindings);
        cursors.push(cursor);
        return cursor;
      };
      instance.db = drizzle(d1.db);
    });
    const started = Date.now();
    return {
      /** The pump writes at most once per coalescing interval, plus the one in flight when counting began. */
      pumpBound: () => Math.ceil((Date.now() - started) / PUMP_COALESCE_MS) + 1,
      rows: () => cursors.reduce((n, c) => n + c.rowsWritten, 0),
      d1Statements: () => d1.executed.length,
      d1RoundTrips: () => d1.roundTrips,
    };
  }

  it("writes a handful of local rows per message and one D1 batch per pump, however many messages it covers", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    const sockets = [await connect(conv.id, alice), await connect(conv.id, bob)];
    await projected(conv.id);

    // One at a time: each message is a commit group of its own.
    const one = await countWrites(conv.id);
    for (let i = 0; i < 10; i++) {
      sockets[0]?.send({ type: "send", localId: `one-${i}`, content: `one ${i}` });
      await sockets[0]?.next("ack", (f) => f.localId === `one-${i}`);
    }
    await projected(conv.id);
    const alone = { rows: one.rows() / 10, d1Statements: one.d1Statements() / 10 };

    // A burst: the sends share commit groups and pumps.
    await new Promise((r) => setTimeout(r, 2_100)); // the send bucket refills
    const burst = await countWrites(conv.id);
    await Promise.all(Array.from({ length: 10 }, (_, i) => send(conv.id, bob, `burst ${i}`, `burst-${i}`)));
    await projected(conv.id);
    const grouped = { rows: burst.rows() / 10, d1Statements: burst.d1Statements() / 10 };

    console.log(`writes per message: alone ${JSON.stringify(alone)}, in a burst ${JSON.stringify(grouped)}`);
    // Every pump is one D1 batch of the three projection statements, whatever it covers, at a rate bounded
    // by time, not by messages.
    for (const phase of [one, burst]) {
      expect(phase.d1Statements()).toBe(phase.d1RoundTrips() * 3);
      expect(phase.d1RoundTrips()).toBeLessThanOrEqual(phase.pumpBound());
    }
    expect(alone.rows).toBeLessThanOrEqual(12);
    expect(grouped.rows).toBeLessThan(alone.rows);
  });
});
