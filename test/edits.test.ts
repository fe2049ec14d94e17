import { describe, expect, it } from "vitest";
import type { ConversationDto, MessageDto } from "../src/schemas";
import { call, createConversation, expectError, uniqueUser } from "./helpers";
import { connect } from "./socket";

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const messagePath = (id: string, seq: number | string) => `/v1/conversations/${id}/messages/${seq}`;

async function send(conversationId: string, as: string, content: string): Promise<MessageDto> {
  const res = await call(`/v1/conversations/${conversationId}/messages`, { method: "POST", as, body: { content } });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as MessageDto;
}

const edit = (conversationId: string, as: string, seq: number | string, content: string) =>
  call(messagePath(conversationId, seq), { method: "PATCH", as, body: { content } });

const remove = (conversationId: string, as: string, seq: number | string) =>
  call(messagePath(conversationId, seq), { method: "DELETE", as });

async function history(conversationId: string, as: string): Promise<MessageDto[]> {
  const res = await call(`/v1/conversations/${conversationId}/messages?after=0&limit=100`, { as });
  expect(res.status).toBe(200);
  return ((await res.json()) as { messages: MessageDto[] }).messages;
}

async function conversation(conversationId: string, as: string): Promise<ConversationDto> {
  const res = await call(`/v1/conversations/${conversationId}`, { as });
  expect(res.status).toBe(200);
  return (await res.json()) as ConversationDto;
}

/** An owner and two members in a fresh conversation. */
async function trio() {
  const owner = uniqueUser("owner");
  const bob = uniqueUser("bob");
  const carol = uniqueUser("carol");
  const conv = await createConversation(owner, [bob, carol]);
  return { owner, bob, carol, conv };
}

describe("editing a message", () => {
  it("lets the sender edit: 200, editedAt set, same seq, and other sockets get message_updated", async () => {
    const { owner, bob, conv } = await trio();
    const original = await send(conv.id, bob, "helo");
    const o = await connect(conv.id, owner);

    const res = await edit(conv.id, bob, original.seq, "hello");
    expect(res.status).toBe(200);
    const edited = (await res.json()) as MessageDto;
    expect(edited).toEqual({ ...original, content: "hello", editedAt: expect.stringMatching(ISO) });
    expect(Date.parse(edited.editedAt ?? "")).toBeGreaterThanOrEqual(Date.parse(original.createdAt));

    const update = await o.next("message_updated");
    expect(update.message).toEqual(edited);
    expect(o.of("message")).toEqual([]);
    expect(await history(conv.id, owner)).toEqual([edited]);
    o.close();
  });

  it("refuses an edit by another participant, or by the owner of someone else's message, with 403", async () => {
    const { owner, bob, carol, conv } = await trio();
    const original = await send(conv.id, bob, "mine");
    await expectError(await edit(conv.id, carol, original.seq, "carol's now"), 403, "forbidden");
    await expectError(await edit(conv.id, owner, original.seq, "owner's now"), 403, "forbidden");
    expect(await history(conv.id, bob)).toEqual([original]);
  });

  it("refuses an edit of a deleted message with 403", async () => {
    const { bob, conv } = await trio();
    const original = await send(conv.id, bob, "soon gone");
    expect((await remove(conv.id, bob, original.seq)).status).toBe(200);
    await expectError(await edit(conv.id, bob, original.seq, "back again"), 403, "forbidden");
    const [stored] = await history(conv.id, bob);
    expect(stored).toMatchObject({
      seq: original.seq,
      content: "",
      editedAt: null,
      deletedAt: expect.stringMatching(ISO),
    });
  });

  it("answers 404 for a seq that is not a number or not a message", async () => {
    const { bob, conv } = await trio();
    await send(conv.id, bob, "only one");
    for (const seq of ["abc", "999999", "0", "-1", "1.0"]) {
      await expectError(await edit(conv.id, bob, seq, "x"), 404, "not_found");
      await expectError(await remove(conv.id, bob, seq), 404, "not_found");
    }
  });

  it("answers a non-participant 404 with the body of a missing conversation, changing nothing", async () => {
    const { bob, conv } = await trio();
    const original = await send(conv.id, bob, "private");
    const stranger = uniqueUser("stranger");
    const missingEdit = await (await edit("no-such-conversation", stranger, 1, "x")).text();
    const missingDelete = await (await remove("no-such-conversation", stranger, 1)).text();
    const res = await edit(conv.id, stranger, original.seq, "x");
    expect(res.status).toBe(404);
    expect(await res.text()).toBe(missingEdit);
    const del = await remove(conv.id, stranger, original.seq);
    expect(del.status).toBe(404);
    expect(await del.text()).toBe(missingDelete);
    expect(await history(conv.id, bob)).toEqual([original]);
  });

  it("refuses invalid content and unknown fields with 400, changing nothing", async () => {
    const { bob, conv } = await trio();
    const original = await send(conv.id, bob, "keep me");
    for (const body of [{ content: "" }, { content: "  " }, { content: "a".repeat(4001) }, { content: "ok", seq: 9 }]) {
      await expectError(
        await call(messagePath(conv.id, original.seq), { method: "PATCH", as: bob, body }),
        400,
        "validation_failed",
      );
    }
    expect(await history(conv.id, bob)).toEqual([original]);
  });

  it("never changes seq or order, and the preview follows an edit of the last message", async () => {
    const { owner, bob, conv } = await trio();
    const sent = [
      await send(conv.id, bob, "first"),
      await send(conv.id, owner, "second"),
      await send(conv.id, bob, "third"),
    ];
    expect((await edit(conv.id, bob, 1, "first, edited")).status).toBe(200);
    expect((await edit(conv.id, bob, 3, "third, edited")).status).toBe(200);
    expect((await edit(conv.id, bob, 1, "first, edited twice")).status).toBe(200);

    const after = await history(conv.id, owner);
    expect(after.map((m) => [m.seq, m.id, m.senderId, m.createdAt])).toEqual(
      sent.map((m) => [m.seq, m.id, m.senderId, m.createdAt]),
    );
    expect(after.map((m) => m.content)).toEqual(["first, edited twice", "second", "third, edited"]);
    expect(after.map((m) => m.editedAt !== null)).toEqual([true, false, true]);

    const c = await conversation(conv.id, owner);
    expect(c.lastSeq).toBe(3);
    expect(c.lastMessage).toEqual({ seq: 3, senderId: bob, preview: "third, edited", createdAt: sent[2]?.createdAt });
    // The next message takes the next seq: edits consumed none.
    expect((await send(conv.id, owner, "fourth")).seq).toBe(4);
  });
});

describe("deleting a message", () => {
  it("lets the sender delete: 200 tombstone, and sockets get message_updated", async () => {
    const { owner, bob, conv } = await trio();
    const original = await send(conv.id, bob, "regret");
    const o = await connect(conv.id, owner);
    const b = await connect(conv.id, bob);

    const res = await remove(conv.id, bob, original.seq);
    expect(res.status).toBe(200);
    const tombstone = (await res.json()) as MessageDto;
    expect(tombstone).toEqual({ ...original, content: "", deletedAt: expect.stringMatching(ISO) });

    expect((await o.next("message_updated")).message).toEqual(tombstone);
    expect((await b.next("message_updated")).message).toEqual(tombstone);
    expect(await history(conv.id, owner)).toEqual([tombstone]);
    o.close();
    b.close();
  });

  it("lets the owner delete someone else's message, and refuses a plain member with 403", async () => {
    const { owner, bob, carol, conv } = await trio();
    const byBob = await send(conv.id, bob, "bob's");
    const byCarol = await send(conv.id, carol, "carol's");

    await expectError(await remove(conv.id, carol, byBob.seq), 403, "forbidden");
    await expectError(await remove(conv.id, bob, byCarol.seq), 403, "forbidden");
    expect(await history(conv.id, owner)).toEqual([byBob, byCarol]);

    const res = await remove(conv.id, owner, byBob.seq);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ...byBob, content: "", deletedAt: expect.stringMatching(ISO) });
    const [first, second] = await history(conv.id, carol);
    expect(first).toMatchObject({ seq: byBob.seq, content: "", deletedAt: expect.stringMatching(ISO) });
    expect(second).toEqual(byCarol);
  });

  it("answers a second delete 200 with the same deletedAt, broadcasting only once", async () => {
    const { owner, bob, conv } = await trio();
    const original = await send(conv.id, bob, "twice");
    const o = await connect(conv.id, owner);

    const first = await remove(conv.id, bob, original.seq);
    expect(first.status).toBe(200);
    const firstBody = (await first.json()) as MessageDto;
    await o.next("message_updated");
    const second = await remove(conv.id, owner, original.seq);
    expect(second.status).toBe(200);
    const third = await remove(conv.id, bob, original.seq);
    expect(third.status).toBe(200);
    expect(await second.json()).toEqual(firstBody);
    expect(await third.json()).toEqual(firstBody);

    // Frames arrive in order: once this later message is seen, any second message_updated would have been too.
    const marker = await send(conv.id, bob, "marker");
    await o.next("message", (f) => f.message.seq === marker.seq);
    expect(o.of("message_updated")).toHaveLength(1);
    o.close();
  });

  it('turns the conversation\'s lastMessage preview into "" when its last message is deleted', async () => {
    const { owner, bob, conv } = await trio();
    await send(conv.id, owner, "earlier");
    const last = await send(conv.id, bob, "the last word");
    expect((await conversation(conv.id, owner)).lastMessage).toMatchObject({
      seq: last.seq,
      preview: "the last word",
    });

    expect((await remove(conv.id, bob, last.seq)).status).toBe(200);
    const c = await conversation(conv.id, bob);
    expect(c.lastSeq).toBe(last.seq);
    expect(c.lastMessage).toEqual({ seq: last.seq, senderId: bob, preview: "", createdAt: last.createdAt });

    // Deleting an earlier message leaves the preview of the last one alone.
    const newest = await send(conv.id, owner, "new last");
    expect((await remove(conv.id, owner, 1)).status).toBe(200);
    expect((await conversation(conv.id, owner)).lastMessage).toMatchObject({ seq: newest.seq, preview: "new last" });
  });
});
