import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { newId } from "../src/domain/conversations";
import { readLimits } from "../src/env";
import type { ConversationRoom } from "../src/room";
import type { ConversationDto } from "../src/schemas";
import { recordD1, withBindings } from "./d1-recorder";
import { call, createConversation, tokenFor, uniqueUser } from "./helpers";

// A page of the conversation list costs the same number of D1 round trips whatever its size: no N+1.

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
  it.each([20, 100])(
    "walks %i-conversation pages of 200 conversations with at most 2 round trips each",
    async (size) => {
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
      // The recorder saw the requests (at least one round trip each), and none took more than two.
      for (const trips of tripsPerPage) {
        expect(trips).toBeGreaterThanOrEqual(1);
        expect(trips).toBeLessThanOrEqual(2);
      }

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
    },
  );
});

describe("round trips of a WebSocket connect", () => {
  it("reads D1 once with a bearer token (the room's read for ready) and once more with a ticket", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const recording = recordD1(env.DB);
    await runInDurableObject(env.ROOMS.getByName(conv.id), (room: ConversationRoom) => {
      room.db = drizzle(recording.db);
    });
    const app = createApp(readLimits(env));
    const bindings = withBindings(env, { DB: recording.db });
    const tripsToConnect = async (query: string, headers: Record<string, string>) => {
      recording.reset();
      const url = `https://chat.test/v1/conversations/${conv.id}/ws${query}`;
      const res = await app.fetch(new Request(url, { headers: { Upgrade: "websocket", ...headers } }), bindings);
      expect(res.status).toBe(101);
      res.webSocket?.accept();
      res.webSocket?.close(1000);
      return recording.roundTrips;
    };

    expect(await tripsToConnect("", { Authorization: `Bearer ${await tokenFor(bob)}` })).toBe(1);
    const issued = await call(`/v1/conversations/${conv.id}/ticket`, { method: "POST", as: bob });
    const { ticket } = (await issued.json()) as { ticket: string };
    // The ticket is redeemed in the room only once D1 says the conversation exists.
    expect(await tripsToConnect(`?ticket=${ticket}`, {})).toBe(2);
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
