import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { describe, expect, it } from "vitest";
import { planCommit, type Write } from "../src/db/messages";
import { batchSql } from "../src/db/raw";
import { newId } from "../src/domain/conversations";
import type { MessageRow } from "../src/domain/messages";
import { recordD1 } from "./d1-recorder";
import { createConversation, uniqueUser } from "./helpers";

// planCommit against the real D1: one group of writes, as the room's commit loop runs it.

const send = (senderId: string, content: string, localId: string | null = null): Write => ({
  kind: "send",
  id: newId(),
  senderId,
  content,
  localId,
  sentHash: null,
  now: Date.now(),
});

/** Runs one group as the commit loop does; `inserts` is how many INSERT statements reached D1. */
async function commit(conversationId: string, writes: Write[]) {
  const recording = recordD1(env.DB);
  const plan = planCommit(conversationId, writes);
  const outcomes = plan.outcomes(await batchSql(drizzle(recording.db), plan.statements)) as (MessageRow | null)[];
  const inserts = recording.executed.filter((s) => /INSERT INTO messages/.test(s.sql)).length;
  return { outcomes, inserts };
}

async function storedSeqs(conversationId: string) {
  const { results } = await env.DB.prepare("SELECT seq, content FROM messages WHERE conversation_id = ? ORDER BY seq")
    .bind(conversationId)
    .all<{ seq: number; content: string }>();
  return results;
}

describe("a commit group's sends", () => {
  it("get gap-free seqs in arrival order, with no seq for a repeated localId or a non-participant", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    const writes = [
      send(alice, "one", "l1"),
      send(bob, "two"),
      send(alice, "one again", "l1"),
      send(uniqueUser("stranger"), "not in it", "l2"),
      send(bob, "three", "l1"), // another sender's l1 is another message
    ];
    const { outcomes, inserts } = await commit(conv.id, writes);
    expect(inserts).toBe(1);
    expect(outcomes.map((o) => o?.seq ?? null)).toEqual([1, 2, null, null, 3]);
    expect(outcomes.map((o) => o?.content ?? null)).toEqual(["one", "two", null, null, "three"]);
    expect(await storedSeqs(conv.id)).toEqual([
      { seq: 1, content: "one" },
      { seq: 2, content: "two" },
      { seq: 3, content: "three" },
    ]);

    // The next group continues after them, and a localId stored by an earlier group inserts nothing.
    const next = await commit(conv.id, [send(alice, "retry", "l1"), send(alice, "four")]);
    expect(next.outcomes.map((o) => o?.seq ?? null)).toEqual([null, 4]);
  });

  it("stay in order when their content needs several insert statements", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    // Control characters take six characters each in JSON: 40 such messages are far over one statement's share.
    const writes = Array.from({ length: 40 }, (_, i) => send(i % 2 ? alice : bob, `${i}:${"\u0001".repeat(3_990)}`));
    const { outcomes, inserts } = await commit(conv.id, writes);
    expect(inserts).toBeGreaterThan(1);
    expect(outcomes.map((o) => o?.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const stored = await storedSeqs(conv.id);
    expect(stored.map((r) => r.content)).toEqual(writes.map((w) => (w as { content: string }).content));
  });
});
