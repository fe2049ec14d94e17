import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { beforeAll, describe, expect, it } from "vitest";
import { insertConversation, listConversationsFor } from "../src/db/conversations";
import { historyPage } from "../src/db/messages";
import { newId } from "../src/domain/conversations";
import { recordD1 } from "./d1-recorder";
import { uniqueUser } from "./helpers";

// The hot reads must be index range scans whatever the table sizes: no line of their plan may be a full scan.

const FULL_SCAN = /\bSCAN (participants|conversations|messages)\b/;

async function planOf(sql: string, params: unknown[]): Promise<string[]> {
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<{ detail: string }>();
  return results.map((row) => row.detail);
}

const user = uniqueUser("planner");

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
    await env.DB.prepare(
      "INSERT INTO messages (id, conversation_id, seq, sender_id, content, created_at) VALUES (?, ?, 1, ?, 'hi', ?)",
    )
      .bind(newId(), id, user, now)
      .run();
  }
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
    [
      "before a seq, newest first",
      "SELECT * FROM messages WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
    ],
    [
      "after a seq, oldest first",
      "SELECT * FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
    ],
    ["without a cursor, newest first", "SELECT * FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"],
  ])("reads history (%s) through messages_by_seq, without a full scan or a sort", async (_, sql) => {
    const params = sql.includes("seq <") || sql.includes("seq >") ? ["c", 10, 50] : ["c", 50];
    const plan = await planOf(sql, params);
    expect(
      plan.filter((line) => FULL_SCAN.test(line)),
      plan.join("\n"),
    ).toEqual([]);
    expect(
      plan.some((line) => line.includes("messages_by_seq")),
      plan.join("\n"),
    ).toBe(true);
    // Keyset order comes from the index itself.
    expect(
      plan.some((line) => line.includes("TEMP B-TREE")),
      plan.join("\n"),
    ).toBe(false);
  });

  it.each([
    ["before a seq", { before: 10, limit: 50 }],
    ["after a seq", { after: 0, limit: 50 }],
    ["without a cursor", { limit: 50 }],
  ])(
    "reads history through the real historyPage (%s) on messages_by_seq, without a full scan or a sort",
    async (_, page) => {
      const recording = recordD1(env.DB);
      await historyPage(drizzle(recording.db), "some-conversation", page);
      const selects = recording.executed.filter((s) => /^\s*select\b/i.test(s.sql));
      expect(selects).toHaveLength(1);
      for (const { sql, params } of selects) {
        const plan = await planOf(sql, params);
        expect(
          plan.filter((line) => FULL_SCAN.test(line)),
          `${sql}\n${plan.join("\n")}`,
        ).toEqual([]);
        expect(
          plan.some((line) => line.includes("messages_by_seq")),
          plan.join("\n"),
        ).toBe(true);
        expect(
          plan.some((line) => line.includes("TEMP B-TREE")),
          plan.join("\n"),
        ).toBe(false);
      }
    },
  );

  it("detects a full scan when there is one", async () => {
    // The guard against a test that cannot fail: an unindexed filter must show up as a scan.
    const plan = await planOf("SELECT * FROM messages WHERE content = ?", ["hi"]);
    expect(
      plan.some((line) => FULL_SCAN.test(line)),
      plan.join("\n"),
    ).toBe(true);
  });
});
