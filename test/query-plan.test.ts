import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { beforeAll, describe, expect, it } from "vitest";
import { insertConversation, listConversationsFor } from "../src/db/conversations";
import { newId } from "../src/domain/conversations";
import { historyPage } from "../src/room/log";
import { recordD1 } from "./d1-recorder";
import { createConversation, inRoomSql, seedMessages, uniqueUser } from "./helpers";

// The hot reads must be index range scans whatever the table sizes: no line of their plan may be a full scan.
// The list reads D1; history reads the conversation's room (its SQLite, inside the Object).

const FULL_SCAN = /\bSCAN (participants|conversations|messages)\b/;

async function planOf(sql: string, params: unknown[]): Promise<string[]> {
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<{ detail: string }>();
  return results.map((row) => row.detail);
}

/** The same, for the room's own SQLite (the history is there; its tables have no conversation_id). */
const ROOM_SCAN = /\bSCAN (messages|participants)\b/;

function roomPlanOf(sql: SqlStorage, query: string, bindings: unknown[]): string[] {
  return sql
    .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${query}`, ...bindings)
    .toArray()
    .map((row) => row.detail);
}

const user = uniqueUser("planner");
let room = "";

beforeAll(async () => {
  // Some rows, so that the plans are those of a database in use, not of empty tables.
  const db = drizzle(env.DB);
  const now = Date.now();
  for (let i = 0; i < 30; i++) {
    const id = newId();
    await insertConversation(db, {
      id,
      title: null,
      direct: false,
      directKey: null,
      createdBy: i % 2 === 0 ? user : uniqueUser("other"),
      memberIds: [i % 2 === 0 ? uniqueUser("member") : user, uniqueUser("member")],
      now: now - i * 1000,
    });
  }
  // A conversation with a history in its room, whose history queries are planned there.
  const owner = uniqueUser("owner");
  room = (await createConversation(owner, [uniqueUser("member")])).id;
  await seedMessages(room, owner, 200);
});

/** The SELECTs the conversation list sends to D1, with their values, recorded from the real code. */
async function listQueries(cursor: { activityAt: number; conversationId: string } | null) {
  const recording = recordD1(env.DB);
  const { page } = await listConversationsFor(drizzle(recording.db), user, 20, cursor);
  expect(page.length).toBeGreaterThan(0);
  const selects = recording.executed.filter((s) => /^\s*select\b/i.test(s.sql));
  expect(selects.length).toBeGreaterThan(0);
  return selects;
}

describe("query plans", () => {
  it.each([
    ["the first page", false],
    ["a page after a cursor", true],
  ])("lists conversations (%s) through participants_by_user_activity, without a full scan", async (_, withCursor) => {
    const cursor = withCursor ? { activityAt: Date.now() - 5_000, conversationId: "~" } : null;
    const selects = await listQueries(cursor);
    const plans: string[] = [];
    for (const { sql, params } of selects) {
      const plan = await planOf(sql, params);
      expect(
        plan.filter((line) => FULL_SCAN.test(line)),
        `${sql}\n${plan.join("\n")}`,
      ).toEqual([]);
      plans.push(...plan);
    }
    const indexed = plans.filter((line) => line.includes("participants_by_user_activity"));
    expect(indexed.length, plans.join("\n")).toBeGreaterThan(0);
    if (withCursor) {
      // The keyset is a range of the index, not a filter over every row of the user.
      expect(
        indexed.every((line) => line.includes("(activity_at,conversation_id)<(?,?)")),
        plans.join("\n"),
      ).toBe(true);
    }
  });

  it.each([
    ["before a seq", { before: 10, limit: 50 }],
    ["after a seq", { after: 0, limit: 50 }],
    ["without a cursor", { limit: 50 }],
  ])(
    "reads history in the room through the real historyPage (%s) on the primary key, without a scan or a sort",
    async (_, page) => {
      const plans = await inRoomSql(room, (sql) => {
        // The real queries, with their values, recorded on their way to the room's SQLite.
        const executed: { query: string; bindings: unknown[] }[] = [];
        const recording = {
          exec: (query: string, ...bindings: unknown[]) => {
            executed.push({ query, bindings });
            return sql.exec(query, ...bindings);
          },
        } as unknown as SqlStorage;
        const { rows } = historyPage(recording, room, page);
        expect(rows.length).toBeGreaterThan(0);
        expect(executed).toHaveLength(1);
        return executed.map(({ query, bindings }) => ({ query, plan: roomPlanOf(sql, query, bindings) }));
      });
      for (const { query, plan } of plans) {
        const shown = `${query}\n${plan.join("\n")}`;
        expect(
          plan.filter((line) => ROOM_SCAN.test(line)),
          shown,
        ).toEqual([]);
        // A range of the rowid: seq is the INTEGER PRIMARY KEY.
        expect(
          plan.some((line) => /^SEARCH messages USING INTEGER PRIMARY KEY \(rowid[<>]\?\)$/.test(line)),
          shown,
        ).toBe(true);
        // Keyset order comes from the primary key itself.
        expect(
          plan.some((line) => line.includes("TEMP B-TREE")),
          shown,
        ).toBe(false);
      }
    },
  );

  it("detects a full scan when there is one", async () => {
    // The guard against a test that cannot fail: an unindexed filter must show up as a scan, in D1 and in
    // the room, and a sort the key does not give as a temp B-tree.
    const plan = await planOf("SELECT * FROM participants WHERE role = ?", ["owner"]);
    expect(
      plan.some((line) => FULL_SCAN.test(line)),
      plan.join("\n"),
    ).toBe(true);
    const inRoom = await inRoomSql(room, (sql) =>
      roomPlanOf(sql, "SELECT * FROM messages WHERE content = ? ORDER BY created_at", ["bulk 1"]),
    );
    expect(
      inRoom.some((line) => ROOM_SCAN.test(line)),
      inRoom.join("\n"),
    ).toBe(true);
    expect(
      inRoom.some((line) => line.includes("TEMP B-TREE")),
      inRoom.join("\n"),
    ).toBe(true);
  });
});
