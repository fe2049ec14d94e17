import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { newId } from "../src/domain/conversations";
import { readLimits } from "../src/env";
import type { ConversationRoom } from "../src/room/room";
import type { ConversationDto } from "../src/schemas";
import { recordD1, withBindings } from "./d1-recorder";
import { createConversation, eventually, projected, storedMarkers, tokenFor, uniqueUser } from "./helpers";
import { TestSocket } from "./socket";

// A page of the conversation list costs one D1 round trip whatever its size: no N+1. Everything else a client
// does in a conversation (connect, send, edit, delete, read, history) is answered by its room without D1.

const COUNT = 200;
const user = uniqueUser("busy");
const bystander = uniqueUser("bystander");

interface Seeded {
  id: string;
  activityAt: number;
  lastSeq: number;
  other: string;
}
const seeded: Seeded[] = [];

beforeAll(async () => {
  const base = Date.now() - 10 * 24 * 3600 * 1000;
  const statements: D1PreparedStatement[] = [];
  const conversation = env.DB.prepare(
    "INSERT INTO conversations (id, title, direct, created_by, created_at, updated_at, last_seq) VALUES (?, NULL, 0, ?, ?, ?, ?)",
  );
  const participant = env.DB.prepare(
    "INSERT INTO participants (conversation_id, user_id, role, joined_at, last_read_seq, last_delivered_seq, activity_at) VALUES (?, ?, ?, ?, 0, 0, ?)",
  );
  for (let i = 0; i < COUNT; i++) {
    // Groups of four share one activity time, so that the cursor's tie-break on the id is exercised.
    const activityAt = base + Math.floor(i / 4) * 1000;
    const row: Seeded = { id: newId(), activityAt, lastSeq: i % 7, other: uniqueUser("peer") };
    seeded.push(row);
    statements.push(
      conversation.bind(row.id, user, base, activityAt, row.lastSeq),
      participant.bind(row.id, user, "owner", base, activityAt),
      participant.bind(row.id, row.other, "member", base, activityAt),
    );
  }
  // Conversations the user is not in, interleaved in time with theirs: they must never show up.
  for (let i = 0; i < 20; i++) {
    const id = newId();
    const activityAt = base + i * 10_000 + 500;
    statements.push(
      conversation.bind(id, bystander, base, activityAt, 0),
      participant.bind(id, bystander, "owner", base, activityAt),
    );
  }
  await env.DB.batch(statements);
});

/** The expected order: most recent activity first, ties by id, descending. */
const expectedOrder = () =>
  [...seeded]
    .sort((a, b) => b.activityAt - a.activityAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
    .map((row) => row.id);

describe("round trips of the conversation list", () => {
  it.each([20, 100])("walks %i-conversation pages of 200 conversations with one round trip each", async (size) => {
    const recording = recordD1(env.DB);
    const app = createApp(readLimits(env));
    const bindings = withBindings(env, { DB: recording.db });
    const token = await tokenFor(user);

    const seen: ConversationDto[] = [];
    const tripsPerPage: number[] = [];
    let cursor: string | null = null;
    do {
      const query = new URLSearchParams({ limit: String(size) });
      if (cursor !== null) query.set("cursor", cursor);
      const ctx = createExecutionContext();
      recording.reset();
      const res = await app.fetch(
        new Request(`https://chat.test/v1/conversations?${query}`, { headers: { Authorization: `Bearer ${token}` } }),
        bindings,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      expect(res.status, await res.clone().text()).toBe(200);
      tripsPerPage.push(recording.roundTrips);
      const page = (await res.json()) as { conversations: ConversationDto[]; nextCursor: string | null };
      expect(page.conversations.length).toBeLessThanOrEqual(size);
      seen.push(...page.conversations);
      cursor = page.nextCursor;
      expect(tripsPerPage.length, "the walk does not end").toBeLessThanOrEqual(COUNT / size + 1);
    } while (cursor !== null);

    expect(tripsPerPage).toHaveLength(Math.ceil(COUNT / size));
    // One round trip a page (a batch of the page and its participants), whatever the page's size.
    expect(tripsPerPage).toEqual(tripsPerPage.map(() => 1));

    const ids = seen.map((c) => c.id);
    expect(new Set(ids).size, "no duplicates").toBe(ids.length);
    expect(ids).toEqual(expectedOrder());

    const byId = new Map(seeded.map((row) => [row.id, row]));
    for (const c of seen) {
      const row = byId.get(c.id);
      expect(row).toBeDefined();
      expect(c.participants.map((p) => p.userId).sort()).toEqual([user, row?.other].sort());
      expect(c.unreadCount).toBe(row?.lastSeq);
    }
  });
});

/**
 * The Worker and the conversation's room, each with its own recorder of D1. Before every operation the test
 * waits until the room's outbox pump has given D1 everything (so that the pump, which runs off the request
 * path within PUMP_COALESCE_MS, has nothing to send while the operation runs), then counts what the
 * operation itself sent to D1 from either side.
 */
async function recordedRoom(conversationId: string) {
  const worker = recordD1(env.DB);
  const room = recordD1(env.DB);
  await runInDurableObject(env.ROOMS.getByName(conversationId), (instance: ConversationRoom) => {
    instance.db = drizzle(room.db);
  });
  const app = createApp(readLimits(env));
  const bindings = withBindings(env, { DB: worker.db });
  /** Runs `operation` once D1 has caught up; returns the D1 round trips it made from the Worker and the room. */
  const tripsOf = async (operation: () => Promise<void>) => {
    await projected(conversationId);
    worker.reset();
    room.reset();
    await operation();
    return { worker: worker.roundTrips, room: room.roundTrips };
  };
  const fetch = async (path: string, as: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${await tokenFor(as)}`);
    if (init.body !== undefined) headers.set("Content-Type", "application/json");
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`https://chat.test${path}`, { ...init, headers }), bindings, ctx);
    await waitOnExecutionContext(ctx);
    return res;
  };
  return { worker, room, app, bindings, tripsOf, fetch };
}

const NONE = { worker: 0, room: 0 };

describe("round trips of a WebSocket connect", () => {
  it("makes no D1 call, from the Worker or the room, with a bearer token or a ticket", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const { app, bindings, tripsOf, fetch } = await recordedRoom(conv.id);
    const connect = async (query: string, headers: Record<string, string>) => {
      const url = `https://chat.test/v1/conversations/${conv.id}/ws${query}`;
      const res = await app.fetch(new Request(url, { headers: { Upgrade: "websocket", ...headers } }), bindings);
      expect(res.status).toBe(101);
      const socket = new TestSocket(res.webSocket as WebSocket);
      await socket.next("ready");
      socket.close();
      await socket.waitClosed();
    };

    const bearer = { Authorization: `Bearer ${await tokenFor(bob)}` };
    expect(await tripsOf(() => connect("", bearer))).toEqual(NONE);
    let ticket = "";
    expect(
      await tripsOf(async () => {
        const issued = await fetch(`/v1/conversations/${conv.id}/ticket`, bob, { method: "POST" });
        expect(issued.status).toBe(201);
        ({ ticket } = (await issued.json()) as { ticket: string });
      }),
      "issuing a ticket",
    ).toEqual(NONE);
    // The ticket is redeemed in the room, which knows the conversation: D1 is not asked whether it exists.
    expect(await tripsOf(() => connect(`?ticket=${ticket}`, {}))).toEqual(NONE);
  });
});

describe("round trips of the conversation's operations", () => {
  it("sends, edits, deletes, reads and pages history with no D1 call; the pump then writes D1 in one batch", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const { room, app, bindings, tripsOf, fetch } = await recordedRoom(conv.id);
    const messages = `/v1/conversations/${conv.id}/messages`;
    const expectStatus = async (res: Response, status: number) =>
      expect(res.status, await res.clone().text()).toBe(status);

    const upgrade = await app.fetch(
      new Request(`https://chat.test/v1/conversations/${conv.id}/ws`, {
        headers: { Upgrade: "websocket", Authorization: `Bearer ${await tokenFor(bob)}` },
      }),
      bindings,
    );
    expect(upgrade.status).toBe(101);
    const socket = new TestSocket(upgrade.webSocket as WebSocket);
    await socket.next("ready");

    const trips: Record<string, { worker: number; room: number }> = {};
    trips["REST send"] = await tripsOf(async () => {
      await expectStatus(
        await fetch(messages, alice, { method: "POST", body: JSON.stringify({ content: "one" }) }),
        201,
      );
    });
    trips["REST retry of a send"] = await tripsOf(async () => {
      const body = JSON.stringify({ content: "two", localId: "l-2" });
      await expectStatus(await fetch(messages, alice, { method: "POST", body }), 201);
      await expectStatus(await fetch(messages, alice, { method: "POST", body }), 200);
    });
    trips["socket send"] = await tripsOf(async () => {
      socket.send({ type: "send", localId: "s-1", content: "three" });
      await socket.next("ack", (f) => f.localId === "s-1");
    });
    trips.edit = await tripsOf(async () => {
      const body = JSON.stringify({ content: "uno" });
      await expectStatus(await fetch(`${messages}/1`, alice, { method: "PATCH", body }), 200);
    });
    trips.delete = await tripsOf(async () => {
      await expectStatus(await fetch(`${messages}/2`, alice, { method: "DELETE" }), 200);
    });
    trips["REST read"] = await tripsOf(async () => {
      const body = JSON.stringify({ seq: 2 });
      await expectStatus(await fetch(`/v1/conversations/${conv.id}/read`, bob, { method: "POST", body }), 200);
    });
    trips["socket read"] = await tripsOf(async () => {
      const from = socket.frames.length;
      socket.send({ type: "read", seq: 3 });
      // A read frame is answered only when refused: it is done once the room stores the marker.
      await eventually(async () => (await storedMarkers(conv.id, bob))?.lastReadSeq === 3, 3000, "the read marker");
      expect(socket.frames.slice(from).filter((f) => f.type === "error")).toEqual([]);
    });
    trips["history, newest first"] = await tripsOf(async () => {
      await expectStatus(await fetch(`${messages}?limit=2`, bob), 200);
    });
    trips["history, before a seq"] = await tripsOf(async () => {
      await expectStatus(await fetch(`${messages}?before=3&limit=2`, bob), 200);
    });
    trips["history, after a seq"] = await tripsOf(async () => {
      await expectStatus(await fetch(`${messages}?after=0&limit=2`, bob), 200);
    });
    trips["the conversation"] = await tripsOf(async () => {
      await expectStatus(await fetch(`/v1/conversations/${conv.id}`, bob), 200);
    });
    expect(trips).toEqual(Object.fromEntries(Object.keys(trips).map((name) => [name, NONE])));

    // What D1 learns, it learns from the room's pump, off the request path, in projection batches.
    await projected(conv.id);
    room.reset();
    const last = await fetch(messages, alice, { method: "POST", body: JSON.stringify({ content: "four" }) });
    await expectStatus(last, 201);
    expect(room.roundTrips, "nothing before the answer").toBe(0);
    await projected(conv.id);
    expect(room.roundTrips, "the pump wrote the send").toBe(1);
    expect(room.executed.every((s) => s.via === "batch")).toBe(true);
    for (const { sql } of room.executed) {
      expect(sql).toMatch(/^\s*(DELETE FROM|INSERT INTO|UPDATE) (participants|conversations)\b/);
    }
    socket.close();
  });
});

describe("the round-trip recorder", () => {
  it("counts a batch as one round trip and each statement run on its own as one", async () => {
    const recording = recordD1(env.DB);
    const one = recording.db.prepare("SELECT ? AS n");
    await recording.db.batch([one.bind(1), one.bind(2), recording.db.prepare("SELECT 3 AS n")]);
    expect(recording.roundTrips).toBe(1);
    expect(await one.bind(4).first("n")).toBe(4);
    expect(await one.bind(5).all()).toMatchObject({ results: [{ n: 5 }] });
    expect(await one.bind(6).raw()).toEqual([[6]]);
    expect(recording.roundTrips).toBe(4);
    expect(recording.executed.map((s) => [s.via, s.params])).toEqual([
      ["batch", [1]],
      ["batch", [2]],
      ["batch", []],
      ["first", [4]],
      ["all", [5]],
      ["raw", [6]],
    ]);
  });
});
