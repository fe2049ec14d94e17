import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { ConversationDto, MessageDto } from "../src/schemas";
import { call, createConversation, expectError, uniqueUser } from "./helpers";

interface Page {
  messages: MessageDto[];
  hasMore: boolean;
}

const TOTAL = 250;

const historyPath = (id: string, query = "") => `/v1/conversations/${id}/messages${query}`;

async function page(conversationId: string, as: string, query = ""): Promise<Page> {
  const res = await call(historyPath(conversationId, query), { as });
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as Page;
  expect(Object.keys(body).sort()).toEqual(["hasMore", "messages"]);
  return body;
}

const range = (from: number, to: number) =>
  from <= to
    ? Array.from({ length: to - from + 1 }, (_, i) => from + i)
    : Array.from({ length: from - to + 1 }, (_, i) => from - i);

describe("history paging", () => {
  const owner = uniqueUser("owner");
  // 13 senders with a bucket of 20 each can send 260 messages at once: the data is real, made by the room.
  const senders = [owner, ...Array.from({ length: 12 }, (_, i) => uniqueUser(`sender${i}`))];
  let conv: ConversationDto;
  /** What each seq holds, as the room acknowledged it. */
  const bySeq = new Map<number, MessageDto>();

  beforeAll(async () => {
    conv = await createConversation(
      owner,
      senders.filter((s) => s !== owner),
    );
    const room = env.ROOMS.getByName(conv.id);
    const results = await Promise.all(
      Array.from({ length: TOTAL }, (_, i) =>
        room.sendMessage({
          senderId: senders[i % senders.length] ?? owner,
          content: `message ${i}`,
          localId: `seed-${i}`,
        }),
      ),
    );
    for (const result of results) {
      if (!result.ok) throw new Error(`seeding failed: ${JSON.stringify(result)}`);
      bySeq.set(result.value.message.seq, result.value.message);
    }
    expect([...bySeq.keys()].sort((a, b) => a - b)).toEqual(range(1, TOTAL));
  });

  /** The page holds exactly these seqs, each as it was stored. */
  function expectSeqs(p: Page, seqs: number[]) {
    expect(p.messages.map((m) => m.seq)).toEqual(seqs);
    for (const m of p.messages) expect(m).toEqual(bySeq.get(m.seq));
  }

  it("gives the 50 newest first by default, with hasMore", async () => {
    const p = await page(conv.id, owner);
    expectSeqs(p, range(TOTAL, TOTAL - 49));
    expect(p.hasMore).toBe(true);
  });

  it("walks down with ?before= to seq 1 with no gap and no duplicate", async () => {
    for (const limit of [undefined, 100, 7]) {
      const seen: number[] = [];
      const suffix = limit === undefined ? "" : `&limit=${limit}`;
      let p = await page(conv.id, owner, limit === undefined ? "" : `?limit=${limit}`);
      let pages = 1;
      for (;;) {
        expect(p.messages.length).toBe(Math.min(limit ?? 50, TOTAL - seen.length));
        seen.push(...p.messages.map((m) => m.seq));
        if (!p.hasMore) break;
        const last = p.messages.at(-1)?.seq;
        p = await page(conv.id, owner, `?before=${last}${suffix}`);
        pages++;
        expect(pages).toBeLessThan(100);
      }
      expect(seen).toEqual(range(TOTAL, 1));
      expect(pages).toBe(Math.ceil(TOTAL / (limit ?? 50)));
    }
  });

  it("walks up with ?after=0&limit=100, oldest first, to the newest", async () => {
    const seen: number[] = [];
    let after = 0;
    const hasMore: boolean[] = [];
    for (;;) {
      const p = await page(conv.id, owner, `?after=${after}&limit=100`);
      expectSeqs(p, range(after + 1, Math.min(after + 100, TOTAL)));
      seen.push(...p.messages.map((m) => m.seq));
      hasMore.push(p.hasMore);
      if (!p.hasMore) break;
      after = p.messages.at(-1)?.seq ?? after;
    }
    expect(seen).toEqual(range(1, TOTAL));
    expect(hasMore).toEqual([true, true, false]);
  });

  it("says hasMore false at both ends, including a page that ends exactly at an end", async () => {
    const cases: [string, number[], boolean][] = [
      ["?before=1", [], false],
      ["?before=2", [1], false],
      ["?before=3&limit=1", [2], true],
      ["?before=101&limit=100", range(100, 1), false],
      ["?before=102&limit=100", range(101, 2), true],
      [`?after=${TOTAL}`, [], false],
      [`?after=${TOTAL - 1}`, [TOTAL], false],
      [`?after=${TOTAL - 100}&limit=100`, range(TOTAL - 99, TOTAL), false],
      [`?after=${TOTAL - 101}&limit=100`, range(TOTAL - 100, TOTAL - 1), true],
      [`?after=${TOTAL + 50}`, [], false],
      [`?before=${TOTAL + 50}&limit=1`, [TOTAL], true],
      ["?limit=100", range(TOTAL, TOTAL - 99), true],
    ];
    for (const [query, seqs, hasMore] of cases) {
      const p = await page(conv.id, owner, query);
      expect({ query, seqs: p.messages.map((m) => m.seq), hasMore: p.hasMore }).toEqual({ query, seqs, hasMore });
    }
  });

  it("refuses before and after together with 400", async () => {
    await expectError(
      await call(historyPath(conv.id, "?before=100&after=10"), { as: owner }),
      400,
      "validation_failed",
    );
  });

  it("refuses a limit of 0, 101 or abc with 400, and takes 1 and 100", async () => {
    for (const limit of ["0", "101", "abc", "-1", "1.5"]) {
      await expectError(await call(historyPath(conv.id, `?limit=${limit}`), { as: owner }), 400, "validation_failed");
    }
    expect((await page(conv.id, owner, "?limit=1")).messages).toHaveLength(1);
    expect((await page(conv.id, owner, "?limit=100")).messages).toHaveLength(100);
  });

  it("refuses a negative or non-numeric before or after with 400", async () => {
    for (const query of ["?before=-1", "?before=abc", "?after=-5", "?after=abc", "?after=2.5"]) {
      await expectError(await call(historyPath(conv.id, query), { as: owner }), 400, "validation_failed");
    }
  });

  it("answers a non-participant 404 with the body of a missing conversation", async () => {
    const stranger = uniqueUser("stranger");
    const res = await call(historyPath(conv.id), { as: stranger });
    expect(res.status).toBe(404);
    const missing = await call(historyPath("no-such-conversation"), { as: stranger });
    expect(missing.status).toBe(404);
    expect(await res.text()).toBe(await missing.text());
  });
});

describe("history of deleted messages", () => {
  it("shows a deleted message as a tombstone: content empty, deletedAt set, in its place", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    const sent: MessageDto[] = [];
    for (const content of ["one", "two", "three"]) {
      const res = await call(historyPath(conv.id), { method: "POST", as: alice, body: { content } });
      expect(res.status).toBe(201);
      sent.push((await res.json()) as MessageDto);
    }
    const deleted = await call(`/v1/conversations/${conv.id}/messages/2`, { method: "DELETE", as: alice });
    expect(deleted.status).toBe(200);

    for (const [query, order] of [
      ["", [3, 2, 1]],
      ["?after=0", [1, 2, 3]],
    ] as const) {
      const p = await page(conv.id, bob, query);
      expect(p.messages.map((m) => m.seq)).toEqual(order);
      const tombstone = p.messages.find((m) => m.seq === 2);
      expect(tombstone).toEqual({
        ...sent[1],
        content: "",
        deletedAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
      });
      expect(p.messages.filter((m) => m.seq !== 2)).toEqual(query === "" ? [sent[2], sent[0]] : [sent[0], sent[2]]);
    }
  });
});
