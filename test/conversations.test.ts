import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ConversationDto, ParticipantDto } from "../src/schemas";
import {
  call,
  createConversation,
  expectError,
  inRoomSql,
  projected,
  seedMessages,
  storedMarkers,
  uniqueUser,
} from "./helpers";

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

interface Page {
  conversations: ConversationDto[];
  nextCursor: string | null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const create = (as: string, body: unknown) => call("/v1/conversations", { method: "POST", as, body });

async function list(as: string, query = ""): Promise<Page> {
  const res = await call(`/v1/conversations${query}`, { as });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Page;
}

async function get(as: string, id: string): Promise<ConversationDto> {
  const res = await call(`/v1/conversations/${id}`, { as });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as ConversationDto;
}

const addParticipants = (as: string, id: string, userIds: string[]) =>
  call(`/v1/conversations/${id}/participants`, { method: "POST", as, body: { userIds } });

const removeParticipant = (as: string, id: string, userId: string) =>
  call(`/v1/conversations/${id}/participants/${encodeURIComponent(userId)}`, { method: "DELETE", as });

const participant = (c: ConversationDto, userId: string): ParticipantDto | undefined =>
  c.participants.find((p) => p.userId === userId);

const roles = (c: ConversationDto) => Object.fromEntries(c.participants.map((p) => [p.userId, p.role]));

/** The room's participants (its system of record), after checking that D1's directory has caught up with them. */
async function participantCount(id: string): Promise<number> {
  const inRoom = await inRoomSql(
    id,
    (sql) => sql.exec<{ n: number }>("SELECT count(*) AS n FROM participants").one().n,
  );
  await projected(id);
  const row = await env.DB.prepare("SELECT count(*) AS n FROM participants WHERE conversation_id = ?")
    .bind(id)
    .first<{ n: number }>();
  expect(row?.n ?? -1, "D1's participants, once projected").toBe(inRoom);
  return inRoom;
}

describe("POST /v1/conversations: groups", () => {
  it("creates a group: 201, the caller is owner, everyone is a participant, nothing is unread", async () => {
    const [me, bob, carol] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("carol")];
    const res = await create(me, { participantIds: [bob, carol], title: "Weekend" });
    expect(res.status).toBe(201);
    const c = (await res.json()) as ConversationDto;
    expect(c).toEqual({
      id: expect.any(String),
      title: "Weekend",
      direct: false,
      createdBy: me,
      createdAt: expect.stringMatching(ISO_MS),
      updatedAt: expect.stringMatching(ISO_MS),
      rev: expect.any(Number),
      lastSeq: 0,
      lastMessage: null,
      participants: expect.any(Array),
      unreadCount: 0,
    });
    expect(Number.isInteger(c.rev)).toBe(true);
    expect(c.participants).toHaveLength(3);
    expect(roles(c)).toEqual({ [me]: "owner", [bob]: "member", [carol]: "member" });
    for (const p of c.participants) {
      expect(p).toEqual({
        userId: expect.any(String),
        role: expect.stringMatching(/^(owner|member)$/),
        joinedAt: expect.stringMatching(ISO_MS),
        lastReadSeq: 0,
        lastDeliveredSeq: 0,
      });
    }
    // Every participant sees it, the same one.
    for (const user of [me, bob, carol]) expect(await get(user, c.id)).toMatchObject({ id: c.id, rev: c.rev });
  });

  it("creates a group without a title, with a null title", async () => {
    const me = uniqueUser();
    const c = await createConversation(me, [uniqueUser()]);
    expect(c.title).toBeNull();
    expect((await createConversation(me, [uniqueUser()], { title: null })).title).toBeNull();
    expect((await createConversation(me, [uniqueUser()], { title: "t".repeat(200) })).title).toBe("t".repeat(200));
  });

  it("gives opaque, random ids that are not sequential", async () => {
    const me = uniqueUser();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await createConversation(me, [uniqueUser()])).id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      expect(id).not.toMatch(/^\d+$/);
    }
    // Time-ordered or counter ids share a prefix; random ones (almost surely) do not share four characters.
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) expect(ids[i]?.slice(0, 4)).not.toBe(ids[j]?.slice(0, 4));
    }
  });

  it("creates a group of 100: the caller and 99 others", async () => {
    const me = uniqueUser("big");
    const others = Array.from({ length: 99 }, (_, i) => `${me}-member-${i}`);
    const res = await create(me, { participantIds: others });
    expect(res.status, await res.clone().text()).toBe(201);
    const c = (await res.json()) as ConversationDto;
    expect(c.participants).toHaveLength(100);
    expect(await participantCount(c.id)).toBe(100);
  });

  it.each([
    ["participantIds missing", {}],
    ["participantIds empty", { participantIds: [] }],
    ["participantIds not an array", { participantIds: "bob" }],
    ["a duplicate id", { participantIds: ["dup-user", "dup-user"] }],
    ["a user id with a space", { participantIds: ["bad user"] }],
    ["a user id with a pipe", { participantIds: ["a|b"] }],
    ["a user id with a slash", { participantIds: ["a/b"] }],
    ["an empty user id", { participantIds: [""] }],
    ["a user id of 129 characters", { participantIds: ["u".repeat(129)] }],
    ["a user id that is not a string", { participantIds: [42] }],
    ["an empty title", { participantIds: ["someone"], title: "" }],
    ["a title of white space", { participantIds: ["someone"], title: "   " }],
    ["a title of 201 characters", { participantIds: ["someone"], title: "t".repeat(201) }],
    ["a title that is not a string", { participantIds: ["someone"], title: 5 }],
    ["a direct conversation with 2 others", { participantIds: ["p1", "p2"], direct: true }],
    ["direct as a string", { participantIds: ["someone"], direct: "true" }],
    ["direct as a number", { participantIds: ["someone"], direct: 1 }],
    ["100 participantIds (over 99 others)", { participantIds: Array.from({ length: 100 }, (_, i) => `many-${i}`) }],
    ["an extra createdBy", { participantIds: ["someone"], createdBy: "someone" }],
    ["an extra role", { participantIds: ["someone"], role: "member" }],
    ["an extra id", { participantIds: ["someone"], id: "chosen-id" }],
  ])("refuses %s with 400 validation_failed and stores nothing", async (_, body) => {
    const me = uniqueUser();
    const res = await create(me, body);
    const refused = await expectError(res, 400, "validation_failed");
    expect(Array.isArray(refused.error.details)).toBe(true);
    expect(refused.error.details.length).toBeGreaterThan(0);
    expect((await list(me)).conversations).toEqual([]);
    // Nor for the users it named.
    const named = (body as { participantIds?: unknown }).participantIds;
    if (Array.isArray(named)) {
      for (const other of named.filter((u): u is string => typeof u === "string" && /^[\w.:@-]{1,128}$/.test(u))) {
        const { results } = await env.DB.prepare(
          "SELECT 1 FROM participants p JOIN participants q ON q.conversation_id = p.conversation_id WHERE p.user_id = ? AND q.user_id = ?",
        )
          .bind(me, other)
          .all();
        expect(results).toEqual([]);
      }
    }
  });

  it.each([
    ["a group", false],
    ["a direct conversation", true],
  ])("refuses %s that names the caller with 400 validation_failed", async (_, direct) => {
    const me = uniqueUser();
    const participantIds = direct ? [me] : [uniqueUser(), me];
    const refused = await expectError(await create(me, { participantIds, direct }), 400, "validation_failed");
    expect(refused.error.details).toEqual(
      expect.arrayContaining([expect.objectContaining({ path: expect.stringMatching(/^participantIds/) })]),
    );
    expect((await list(me)).conversations).toEqual([]);
  });
});

describe("POST /v1/conversations: direct", () => {
  it("creates a direct conversation once per pair; either user asking again gets it with 200", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const first = await create(alice, { participantIds: [bob], direct: true });
    expect(first.status).toBe(201);
    const created = (await first.json()) as ConversationDto;
    expect(created.direct).toBe(true);
    expect(roles(created)).toEqual({ [alice]: "owner", [bob]: "member" });

    const again = await create(alice, { participantIds: [bob], direct: true });
    expect(again.status).toBe(200);
    expect(((await again.json()) as ConversationDto).id).toBe(created.id);

    const fromBob = await create(bob, { participantIds: [alice], direct: true });
    expect(fromBob.status).toBe(200);
    const seenByBob = (await fromBob.json()) as ConversationDto;
    expect(seenByBob.id).toBe(created.id);
    expect(seenByBob.participants).toHaveLength(2);

    expect((await list(alice)).conversations.map((c) => c.id)).toEqual([created.id]);
    expect((await list(bob)).conversations.map((c) => c.id)).toEqual([created.id]);
  });

  it("keeps pairs apart, and a group of the same two people is not their direct conversation", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const group = await createConversation(alice, [bob]);
    const ab = await create(alice, { participantIds: [bob], direct: true });
    expect(ab.status).toBe(201);
    const ac = await create(alice, { participantIds: [carol], direct: true });
    expect(ac.status).toBe(201);
    const ids = [group.id, ((await ab.json()) as ConversationDto).id, ((await ac.json()) as ConversationDto).id];
    expect(new Set(ids).size).toBe(3);
  });
});

describe("direct conversations: leaving and coming back", () => {
  it("forbids removing the other of a pair (403), changing nothing: one who should not read on can only leave", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const direct = (await (await create(alice, { participantIds: [bob], direct: true })).json()) as ConversationDto;
    await expectError(await removeParticipant(alice, direct.id, bob), 403, "forbidden");
    await expectError(await removeParticipant(bob, direct.id, alice), 403, "forbidden");
    expect(await participantCount(direct.id)).toBe(2);
    expect((await get(bob, direct.id)).id).toBe(direct.id);
  });

  it("brings back one who left when they create it again, with what was said while they were away", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const direct = (await (await create(alice, { participantIds: [bob], direct: true })).json()) as ConversationDto;
    expect((await removeParticipant(bob, direct.id, bob)).status).toBe(204);
    await expectError(await call(`/v1/conversations/${direct.id}`, { as: bob }), 404, "not_found");
    const sent = await call(`/v1/conversations/${direct.id}/messages`, {
      method: "POST",
      as: alice,
      body: { content: "while you were away" },
    });
    expect(sent.status).toBe(201);

    const back = await create(bob, { participantIds: [alice], direct: true });
    expect(back.status).toBe(200);
    expect(((await back.json()) as ConversationDto).id).toBe(direct.id);
    const history = (await (await call(`/v1/conversations/${direct.id}/messages`, { as: bob })).json()) as {
      messages: { content: string }[];
    };
    expect(history.messages.map((m) => m.content)).toEqual(["while you were away"]);
    expect((await get(bob, direct.id)).unreadCount).toBe(1);
  });
});

describe("GET /v1/conversations/:id", () => {
  it("returns the conversation to a participant", async () => {
    const [me, bob] = [uniqueUser(), uniqueUser()];
    const created = await createConversation(me, [bob], { title: "Plans" });
    expect(await get(bob, created.id)).toEqual({ ...created });
  });

  it("answers a non-participant and a missing id with byte-identical 404 bodies", async () => {
    const [me, stranger] = [uniqueUser(), uniqueUser("stranger")];
    const created = await createConversation(me, [uniqueUser()]);
    const notMine = await call(`/v1/conversations/${created.id}`, { as: stranger });
    const missing = await call("/v1/conversations/AAAAAAAAAAAAAAAAAAAAAA", { as: stranger });
    expect(notMine.status).toBe(404);
    expect(missing.status).toBe(404);
    const [a, b] = [await notMine.text(), await missing.text()];
    expect(a).toBe(b);
    expect(JSON.parse(a)).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    expect(notMine.headers.get("Content-Type")).toBe(missing.headers.get("Content-Type"));
  });
});

describe("GET /v1/conversations", () => {
  it("lists the caller's conversations, most recent activity first", async () => {
    const me = uniqueUser();
    const created: ConversationDto[] = [];
    for (let i = 0; i < 3; i++) {
      created.push(await createConversation(me, [uniqueUser()], { title: `c${i}` }));
      await sleep(3);
    }
    const page = await list(me);
    expect(page.nextCursor).toBeNull();
    expect(page.conversations.map((c) => c.title)).toEqual(["c2", "c1", "c0"]);

    // Activity moves a conversation to the top: adding a participant to the oldest one.
    const [oldest] = created;
    if (!oldest) throw new Error("unreachable");
    expect((await addParticipants(me, oldest.id, [uniqueUser()])).status).toBe(200);
    expect((await list(me)).conversations.map((c) => c.title)).toEqual(["c0", "c2", "c1"]);
  });

  it("shows only the caller's conversations", async () => {
    const [me, other] = [uniqueUser(), uniqueUser()];
    const mine = await createConversation(me, [uniqueUser()]);
    await createConversation(other, [uniqueUser()]);
    expect((await list(me)).conversations.map((c) => c.id)).toEqual([mine.id]);
  });

  it("includes the participants and the caller's unread count of each conversation", async () => {
    const [me, bob, carol] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("carol")];
    const c = await createConversation(me, [bob, carol]);
    await seedMessages(c.id, me, 7);
    const read = await call(`/v1/conversations/${c.id}/read`, { method: "POST", as: bob, body: { seq: 5 } });
    expect(read.status).toBe(200);
    // The list is D1's projection of the rooms: eventually consistent.
    await projected(c.id);

    const [mine] = (await list(me)).conversations;
    expect(mine?.id).toBe(c.id);
    expect(mine?.participants.map((p) => p.userId).sort()).toEqual([me, bob, carol].sort());
    expect(mine?.lastSeq).toBe(7);
    expect(mine?.unreadCount).toBe(7);
    const [bobs] = (await list(bob)).conversations;
    expect(bobs?.unreadCount).toBe(2);
    expect(bobs?.participants).toHaveLength(3);
  });

  it("pages with limit and nextCursor through every conversation, without duplicates or gaps", async () => {
    const me = uniqueUser();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      ids.push((await createConversation(me, [uniqueUser()])).id);
      await sleep(2);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Page = await list(me, `?limit=2${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`);
      pages++;
      expect(page.conversations.length).toBeLessThanOrEqual(2);
      expect(page.conversations.length).toBeGreaterThan(0);
      for (const c of page.conversations) expect(c.participants).toHaveLength(2);
      seen.push(...page.conversations.map((c) => c.id));
      cursor = page.nextCursor;
      expect(pages).toBeLessThanOrEqual(4);
    } while (cursor !== null);
    expect(pages).toBe(4);
    expect(seen).toEqual([...ids].reverse());
  });

  it("answers a full last page with nextCursor null", async () => {
    const me = uniqueUser();
    for (let i = 0; i < 2; i++) await createConversation(me, [uniqueUser()]);
    const page = await list(me, "?limit=2");
    expect(page.conversations).toHaveLength(2);
    expect(page.nextCursor).toBeNull();
  });

  it("defaults to pages of 20", async () => {
    const me = uniqueUser();
    for (let i = 0; i < 21; i++) await createConversation(me, [uniqueUser()]);
    const first = await list(me);
    expect(first.conversations).toHaveLength(20);
    expect(first.nextCursor).not.toBeNull();
    const second = await list(me, `?cursor=${encodeURIComponent(first.nextCursor ?? "")}`);
    expect(second.conversations).toHaveLength(1);
    expect(second.nextCursor).toBeNull();
  });

  it.each([
    ["not base64", "?cursor=%21%21%21"],
    ["base64 of text", `?cursor=${btoa("hello")}`],
    ["base64 of the wrong JSON", `?cursor=${btoa(JSON.stringify({ a: 1 }))}`],
    ["an empty cursor", "?cursor="],
    ["a fractional time", `?cursor=${btoa(JSON.stringify([1.5, "x"]))}`],
  ])("refuses a bad cursor (%s) with 400 validation_failed", async (_, query) => {
    await expectError(await call(`/v1/conversations${query}`, { as: uniqueUser() }), 400, "validation_failed");
  });

  it.each(["0", "101", "abc", "-1", "2.5", "", "1e2"])("refuses limit=%s with 400 validation_failed", async (limit) => {
    await expectError(await call(`/v1/conversations?limit=${limit}`, { as: uniqueUser() }), 400, "validation_failed");
  });

  it("accepts limit=1 and limit=100", async () => {
    const me = uniqueUser();
    await createConversation(me, [uniqueUser()]);
    await createConversation(me, [uniqueUser()]);
    expect((await list(me, "?limit=1")).conversations).toHaveLength(1);
    expect((await list(me, "?limit=100")).conversations).toHaveLength(2);
  });
});

describe("POST /v1/conversations/:id/participants", () => {
  it("lets the owner add a member, whose read marker starts at lastSeq", async () => {
    const [me, bob, dave] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("dave")];
    const c = await createConversation(me, [bob]);
    await seedMessages(c.id, me, 5);
    const res = await addParticipants(me, c.id, [dave]);
    expect(res.status).toBe(200);
    const after = (await res.json()) as ConversationDto;
    expect(after.id).toBe(c.id);
    expect(after.participants).toHaveLength(3);
    expect(participant(after, dave)).toEqual({
      userId: dave,
      role: "member",
      joinedAt: expect.stringMatching(ISO_MS),
      lastReadSeq: 5,
      lastDeliveredSeq: 5,
    });
    expect(await storedMarkers(c.id, dave)).toEqual({ lastReadSeq: 5, lastDeliveredSeq: 5 });
    // History is not unread to the newcomer; it still is to the others.
    expect((await get(dave, c.id)).unreadCount).toBe(0);
    expect((await get(bob, c.id)).unreadCount).toBe(5);
  });

  it("forbids a member to add (403), and hides the conversation from a non-participant (404)", async () => {
    const [me, bob, stranger] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("stranger")];
    const c = await createConversation(me, [bob]);
    await expectError(await addParticipants(bob, c.id, [uniqueUser()]), 403, "forbidden");
    const hidden = await addParticipants(stranger, c.id, [uniqueUser()]);
    const missing = await addParticipants(stranger, "AAAAAAAAAAAAAAAAAAAAAA", [uniqueUser()]);
    expect(hidden.status).toBe(404);
    expect(await hidden.text()).toBe(await missing.text());
    expect(await participantCount(c.id)).toBe(2);
  });

  it("treats adding people who are already in it as a no-op with 200", async () => {
    const [me, bob] = [uniqueUser("me"), uniqueUser("bob")];
    const c = await createConversation(me, [bob]);
    await seedMessages(c.id, me, 3);
    const res = await addParticipants(me, c.id, [bob]);
    expect(res.status).toBe(200);
    const after = (await res.json()) as ConversationDto;
    expect(roles(after)).toEqual({ [me]: "owner", [bob]: "member" });
    expect(participant(after, bob)?.lastReadSeq).toBe(0);
    expect(await participantCount(c.id)).toBe(2);
  });

  it("adds only the newcomers of a mixed list", async () => {
    const [me, bob, dave] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("dave")];
    const c = await createConversation(me, [bob]);
    const res = await addParticipants(me, c.id, [bob, dave]);
    expect(res.status).toBe(200);
    expect(roles((await res.json()) as ConversationDto)).toEqual({ [me]: "owner", [bob]: "member", [dave]: "member" });
  });

  it("refuses to go over 100 participants with 400 validation_failed, adding nobody", async () => {
    const me = uniqueUser("owner");
    const c = await createConversation(me, [`${me}-m-0`]);
    const batch = Array.from({ length: 97 }, (_, i) => `${me}-m-${i + 1}`);
    expect((await addParticipants(me, c.id, batch)).status).toBe(200);
    expect(await participantCount(c.id)).toBe(99);

    const overflow = [`${me}-x-1`, `${me}-x-2`];
    const refused = await expectError(await addParticipants(me, c.id, overflow), 400, "validation_failed");
    expect(refused.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: "userIds" })]));
    expect(await participantCount(c.id)).toBe(99);
    expect((await get(me, c.id)).participants.map((p) => p.userId)).not.toContain(overflow[0]);

    expect((await addParticipants(me, c.id, [`${me}-x-1`])).status).toBe(200);
    expect(await participantCount(c.id)).toBe(100);
    await expectError(await addParticipants(me, c.id, [`${me}-x-3`]), 400, "validation_failed");
    expect(await participantCount(c.id)).toBe(100);
  });

  it("refuses bad input with 400 validation_failed", async () => {
    const me = uniqueUser();
    const c = await createConversation(me, [uniqueUser()]);
    for (const body of [
      {},
      { userIds: [] },
      { userIds: ["bad user"] },
      { userIds: ["x", "x"] },
      { userIds: ["x"], role: "owner" },
    ]) {
      const res = await call(`/v1/conversations/${c.id}/participants`, { method: "POST", as: me, body });
      await expectError(res, 400, "validation_failed");
    }
    expect(await participantCount(c.id)).toBe(2);
  });

  it("forbids adding to a direct conversation (403)", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const res = await create(alice, { participantIds: [bob], direct: true });
    const direct = (await res.json()) as ConversationDto;
    await expectError(await addParticipants(alice, direct.id, [uniqueUser()]), 403, "forbidden");
    expect(await participantCount(direct.id)).toBe(2);
  });
});

describe("DELETE /v1/conversations/:id/participants/:userId", () => {
  it("lets the owner remove a member (204), who then gets 404", async () => {
    const [me, bob, carol] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("carol")];
    const c = await createConversation(me, [bob, carol]);
    const res = await removeParticipant(me, c.id, bob);
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    await expectError(await call(`/v1/conversations/${c.id}`, { as: bob }), 404, "not_found");
    expect((await list(bob)).conversations).toEqual([]);
    expect(Object.keys(roles(await get(me, c.id))).sort()).toEqual([me, carol].sort());
  });

  it("forbids a member to remove someone else (403)", async () => {
    const [me, bob, carol] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("carol")];
    const c = await createConversation(me, [bob, carol]);
    await expectError(await removeParticipant(bob, c.id, carol), 403, "forbidden");
    await expectError(await removeParticipant(bob, c.id, me), 403, "forbidden");
    expect(await participantCount(c.id)).toBe(3);
  });

  it("lets a member leave (204)", async () => {
    const [me, bob] = [uniqueUser("me"), uniqueUser("bob")];
    const c = await createConversation(me, [bob]);
    expect((await removeParticipant(bob, c.id, bob)).status).toBe(204);
    await expectError(await call(`/v1/conversations/${c.id}`, { as: bob }), 404, "not_found");
    expect(roles(await get(me, c.id))).toEqual({ [me]: "owner" });
  });

  it("answers 404 for a userId that is not a participant, and for a caller who is not one", async () => {
    const [me, bob, stranger] = [uniqueUser("me"), uniqueUser("bob"), uniqueUser("stranger")];
    const c = await createConversation(me, [bob]);
    await expectError(await removeParticipant(me, c.id, stranger), 404, "not_found");
    const hidden = await removeParticipant(stranger, c.id, bob);
    const missing = await removeParticipant(stranger, "AAAAAAAAAAAAAAAAAAAAAA", bob);
    expect(hidden.status).toBe(404);
    expect(await hidden.text()).toBe(await missing.text());
    expect(await participantCount(c.id)).toBe(2);
  });

  it("makes the longest-standing remaining participant owner when the owner leaves", async () => {
    const me = uniqueUser("owner");
    // `a-…` sorts before `z-…`, but `z-…` joined first: seniority, not the id, decides.
    const senior = `z-${uniqueUser("senior")}`;
    const junior = `a-${uniqueUser("junior")}`;
    const c = await createConversation(me, [senior]);
    await sleep(5);
    expect((await addParticipants(me, c.id, [junior])).status).toBe(200);

    expect((await removeParticipant(me, c.id, me)).status).toBe(204);
    await expectError(await call(`/v1/conversations/${c.id}`, { as: me }), 404, "not_found");
    const after = await get(senior, c.id);
    expect(roles(after)).toEqual({ [senior]: "owner", [junior]: "member" });

    // The new owner has the owner's rights.
    expect((await removeParticipant(senior, c.id, junior)).status).toBe(204);
  });
});
