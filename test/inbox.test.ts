import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import { describe, expect, it } from "vitest";
import { insertConversation } from "../src/db/conversations";
import type { UserInbox } from "../src/inbox/inbox";
import type { ConversationRoom } from "../src/room/room";
import type { ConversationDto, InboxFrame } from "../src/schemas";
import {
  call,
  createConversation,
  eventually,
  expectError,
  fed,
  inRoomSql,
  projected,
  roomStub,
  uniqueUser,
} from "./helpers";
import { connectInbox, type TestSocket, upgradeInbox } from "./socket";

type Inbox = TestSocket<InboxFrame>;
type ConversationFrame = Extract<InboxFrame, { type: "conversation" }>;

const send = (id: string, as: string, content: string) =>
  call(`/v1/conversations/${id}/messages`, { method: "POST", as, body: { content } });
const markRead = (id: string, as: string, seq: number) =>
  call(`/v1/conversations/${id}/read`, { method: "POST", as, body: { seq } });
const addMembers = (id: string, as: string, userIds: string[]) =>
  call(`/v1/conversations/${id}/participants`, { method: "POST", as, body: { userIds } });
const removeMember = (id: string, as: string, userId: string) =>
  call(`/v1/conversations/${id}/participants/${encodeURIComponent(userId)}`, { method: "DELETE", as });

/** The first `conversation` frame about `id` that satisfies `match`, after frame index `from`. */
const frameOf = (inbox: Inbox, id: string, match: (f: ConversationFrame) => boolean = () => true, from = 0) =>
  inbox.next("conversation", (f) => f.conversation.id === id && match(f), from);

async function totals(userId: string) {
  const res = await call("/v1/inbox", { as: userId });
  expect(res.status).toBe(200);
  return (await res.json()) as { version: number; unreadTotal: number; unreadConversations: number };
}

async function list(userId: string): Promise<ConversationDto[]> {
  const res = await call("/v1/conversations?limit=100", { as: userId });
  expect(res.status).toBe(200);
  return ((await res.json()) as { conversations: ConversationDto[] }).conversations;
}

/** The frames about one conversation the inbox got from frame index `from` on. */
const about = (inbox: Inbox, id: string, from = 0) =>
  inbox.frames
    .slice(from)
    .filter(
      (f) =>
        (f.type === "conversation" && f.conversation.id === id) ||
        (f.type === "conversation_removed" && f.conversationId === id),
    );

/** The frames after `inbox_ready`, once `count` of them arrived and nothing more came for a moment. */
async function catchUp(inbox: Inbox, count: number): Promise<InboxFrame[]> {
  await inbox.until((s) => s.frames.length >= count + 1, 5_000, `${count} catch-up frames`);
  await new Promise((r) => setTimeout(r, 150));
  return inbox.frames.slice(1);
}

describe("the inbox: one socket per user keeps the conversation list live", () => {
  it("shows a new message at every member's inbox with their unread counts, and the sender's unread 0", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const conv = await createConversation(alice, [bob, carol]);
    const inboxes = await Promise.all([alice, bob, carol].map((u) => connectInbox(u)));
    expect((await send(conv.id, alice, "hello both")).status).toBe(201);
    expect((await send(conv.id, alice, "still there?")).status).toBe(201);

    const [a, b, c] = await Promise.all(
      inboxes.map((inbox) => frameOf(inbox, conv.id, (f) => f.conversation.lastSeq === 2)),
    );
    expect(a?.conversation.unreadCount).toBe(0);
    expect(b?.conversation.unreadCount).toBe(2);
    expect(c?.conversation.unreadCount).toBe(2);
    expect(b?.conversation.lastMessage?.preview).toBe("still there?");
    expect(b).toMatchObject({ unreadTotal: 2, unreadConversations: 1 });
    expect(a).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });
    expect(await totals(bob)).toMatchObject({ unreadTotal: 2, unreadConversations: 1 });
    // Each frame's version grows.
    const versions = inboxes[1]?.frames.map((f) => ("version" in f ? f.version : 0)) ?? [];
    expect(versions).toEqual([...versions].sort((x, y) => x - y));
    expect(new Set(versions).size).toBe(versions.length);
  });

  it("sums unread over all the user's conversations", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const one = await createConversation(alice, [bob]);
    const two = await createConversation(alice, [bob]);
    await send(one.id, alice, "1");
    await send(two.id, alice, "2");
    await send(two.id, alice, "3");
    await Promise.all([fed(one.id), fed(two.id)]);
    expect(await totals(bob)).toMatchObject({ unreadTotal: 3, unreadConversations: 2 });
    expect(await totals(alice)).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });
  });

  it("shows a read on one device at the user's other devices", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await send(conv.id, alice, "read me");
    const phone = await connectInbox(bob);
    const laptop = await connectInbox(bob);
    await frameOf(laptop, conv.id, (f) => f.conversation.unreadCount === 1).catch(() => undefined);
    expect((await markRead(conv.id, bob, 1)).status).toBe(200);
    const seen = await Promise.all(
      [phone, laptop].map((d) => frameOf(d, conv.id, (f) => f.conversation.unreadCount === 0)),
    );
    for (const frame of seen) expect(frame).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });
  });

  it("shows a conversation to its new members when it is created or they are added", async () => {
    const [alice, bob, dave] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("dave")];
    const bobs = await connectInbox(bob);
    const daves = await connectInbox(dave);
    const conv = await createConversation(alice, [bob], { title: "Plans" });
    const created = await frameOf(bobs, conv.id);
    expect(created?.conversation.title).toBe("Plans");
    expect(created?.conversation.participants.map((p) => p.userId).sort()).toEqual([alice, bob].sort());

    expect((await addMembers(conv.id, alice, [dave])).status).toBe(200);
    const joined = await frameOf(daves, conv.id);
    expect(joined?.conversation.participants.map((p) => p.userId)).toContain(dave);
    expect(joined?.conversation.unreadCount).toBe(0);
  });

  it("tells a removed user and one who leaves, and nothing of that conversation follows", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const conv = await createConversation(alice, [bob, carol]);
    const bobs = await connectInbox(bob);
    const carols = await connectInbox(carol);
    await send(conv.id, alice, "before");
    await frameOf(bobs, conv.id, (f) => f.conversation.lastSeq === 1);
    await frameOf(carols, conv.id, (f) => f.conversation.lastSeq === 1);

    expect((await removeMember(conv.id, alice, bob)).status).toBe(204);
    expect((await removeMember(conv.id, carol, carol)).status).toBe(204);
    const removed = await bobs.next("conversation_removed", (f) => f.conversationId === conv.id);
    await carols.next("conversation_removed", (f) => f.conversationId === conv.id);
    expect(removed).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });

    const [bobAfter, carolAfter] = [bobs.frames.length, carols.frames.length];
    await send(conv.id, alice, "after");
    await send(conv.id, alice, "and more");
    await fed(conv.id);
    expect(about(bobs, conv.id, bobAfter)).toEqual([]);
    expect(about(carols, conv.id, carolAfter)).toEqual([]);
    expect(await totals(bob)).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });
  });

  it("replays on reconnect exactly the conversations changed after `since`, each once, then live frames", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const quiet = await createConversation(alice, [bob]);
    const busy = await createConversation(alice, [bob]);
    const left = await createConversation(alice, [bob]);
    await Promise.all([fed(quiet.id), fed(busy.id), fed(left.id)]);
    const { version } = await totals(bob);

    for (let i = 1; i <= 5; i++) await send(busy.id, alice, `busy ${i}`);
    await removeMember(left.id, alice, bob);
    await Promise.all([fed(busy.id), fed(left.id)]);

    const inbox = await connectInbox(bob, { since: version });
    const replay = await catchUp(inbox, 2);
    expect(
      replay
        .map((f) =>
          f.type === "conversation"
            ? f.conversation.id
            : f.type === "conversation_removed"
              ? `-${f.conversationId}`
              : f.type,
        )
        .sort(),
    ).toEqual([busy.id, `-${left.id}`].sort());
    const busyFrame = replay.find((f): f is ConversationFrame => f.type === "conversation");
    expect(busyFrame?.conversation.lastSeq).toBe(5);
    expect(busyFrame?.conversation.unreadCount).toBe(5);

    await send(quiet.id, alice, "live now");
    const live = await frameOf(inbox, quiet.id);
    expect(live?.version).toBeGreaterThan(Math.max(...replay.map((f) => ("version" in f ? f.version : 0))));
  });

  it("answers a `since` it no longer covers, or never gave, with a resync", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await fed(conv.id);
    const { version } = await totals(bob);
    const ahead = await connectInbox(bob, { since: version + 10 });
    expect(await catchUp(ahead, 1)).toEqual([{ type: "resync", fromVersion: version + 10 }]);

    // The inbox forgot the changes up to its current version (old removals are pruned this way).
    await runInDurableObject(env.INBOXES.getByName(bob), (_i: UserInbox, state) => {
      state.storage.sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('forgotten_up_to', ?)", version);
    });
    const behind = await connectInbox(bob, { since: version - 1 });
    expect(await catchUp(behind, 1)).toEqual([{ type: "resync", fromVersion: version - 1 }]);
    const current = await connectInbox(bob, { since: version });
    expect(await catchUp(current, 0)).toEqual([]);
  });

  it("loses nothing when the room is evicted before its feed, or the inbox between deliveries", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await fed(conv.id);
    const { version } = await totals(bob);
    expect((await send(conv.id, alice, "then the room went away")).status).toBe(201);
    await evictDurableObject(roomStub(conv.id));
    expect(await runDurableObjectAlarm(roomStub(conv.id))).toBe(true);
    await fed(conv.id);

    await evictDurableObject(env.INBOXES.getByName(bob));
    expect((await send(conv.id, alice, "and the inbox too")).status).toBe(201);
    await fed(conv.id);
    const inbox = await connectInbox(bob, { since: version });
    const frame = await frameOf(inbox, conv.id);
    expect(frame?.conversation.lastSeq).toBe(2);
    expect(frame?.conversation.unreadCount).toBe(2);
  });

  it("takes a retried feed (the same change again, or an older one) without a frame or a new version", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await send(conv.id, alice, "once");
    await fed(conv.id);
    const inbox = await connectInbox(bob);
    const before = await totals(bob);
    // What the room sent last, as its feed would send it again after a failure of another member's call.
    const again = await inRoomSql(conv.id, (sql) => {
      const row = sql.exec<{ rev: number }>("SELECT rev FROM conversation").one();
      return row.rev;
    });
    const current = (await (await call(`/v1/conversations/${conv.id}`, { as: bob })).json()) as ConversationDto;
    const { unreadCount: _, ...shared } = current;
    expect(shared.rev).toBe(again);
    const stub = env.INBOXES.getByName(bob);
    await stub.deliver([{ kind: "conversation", conversation: shared }]);
    await stub.deliver([{ kind: "conversation", conversation: { ...shared, rev: shared.rev - 1, lastSeq: 0 } }]);
    expect(await catchUp(inbox, 0)).toEqual([]);
    expect(await totals(bob)).toEqual(before);
  });

  it("keeps feeding the others while one member's inbox fails, and that member catches up once it answers", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const conv = await createConversation(alice, [bob, carol]);
    await fed(conv.id);
    const bobs = await connectInbox(bob);
    const carols = await connectInbox(carol);
    const failing = { bob: true, refused: 0 };
    await runInDurableObject(roomStub(conv.id), (room: ConversationRoom) => {
      const real = room.inboxOf;
      room.inboxOf = (userId) =>
        userId === bob && failing.bob
          ? { deliver: () => Promise.reject(new Error(`inbox unreachable (${++failing.refused})`)) }
          : real(userId);
    });
    expect((await send(conv.id, alice, "one")).status).toBe(201);
    await frameOf(carols, conv.id, (f) => f.conversation.lastSeq === 1);
    expect((await send(conv.id, alice, "two")).status).toBe(201);
    // The feed goes on while bob's inbox refuses: every version was sent, carol has both messages, bob none.
    await fed(conv.id);
    const second = await frameOf(carols, conv.id, (f) => f.conversation.lastSeq === 2);
    expect(second?.conversation.unreadCount).toBe(2);
    expect(failing.refused).toBeGreaterThanOrEqual(1);
    expect(about(bobs, conv.id)).toEqual([]);
    // Bob's inbox answers again: its retry brings the conversation as it stands now, in one frame.
    failing.bob = false;
    const caughtUp = await frameOf(bobs, conv.id);
    expect(caughtUp?.conversation).toMatchObject({ lastSeq: 2, unreadCount: 2 });
    await eventually(
      () => inRoomSql(conv.id, (sql) => sql.exec("SELECT count(*) AS n FROM inbox_lagging").one().n === 0),
      5_000,
      "bob's inbox caught up",
    );
    expect(
      carols
        .of("conversation")
        .filter((f) => f.conversation.id === conv.id)
        .map((f) => f.conversation.lastSeq),
    ).toEqual([1, 2]);
  });

  it("ends equal to a fresh list load, whatever the order of a list load and the frames (the merge rule)", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const convs = [await createConversation(alice, [bob]), await createConversation(alice, [bob], { title: "T" })];
    const inbox = await connectInbox(bob);
    const early = await list(bob);
    await send(convs[0]?.id ?? "", alice, "one");
    await markRead(convs[0]?.id ?? "", bob, 1);
    await send(convs[1]?.id ?? "", alice, "two");
    await call(`/v1/conversations/${convs[1]?.id}/messages`, { method: "POST", as: bob, body: { content: "reply" } });
    await Promise.all(convs.map((c) => fed(c.id)));
    await Promise.all(convs.map((c) => projected(c.id)));
    const late = await list(bob);
    const fresh = await list(bob);
    const frames = inbox.frames.filter((f): f is ConversationFrame => f.type === "conversation");

    // The merge rule of the contract: per id, the higher rev wins; the own lastReadSeq only grows.
    const merge = (into: Map<string, ConversationDto>, c: ConversationDto) => {
      const had = into.get(c.id);
      if (!had || c.rev > had.rev) into.set(c.id, c);
    };
    const orders: ConversationDto[][] = [
      [...early, ...frames.map((f) => f.conversation)],
      [...frames.map((f) => f.conversation), ...early],
      [...frames.map((f) => f.conversation), ...late],
      [...late, ...frames.map((f) => f.conversation)],
      [...frames.slice(0, 1).map((f) => f.conversation), ...late, ...frames.slice(1).map((f) => f.conversation)],
    ];
    const ids = new Set(convs.map((c) => c.id));
    const expected = fresh.filter((c) => ids.has(c.id)).sort((x, y) => x.id.localeCompare(y.id));
    for (const order of orders) {
      const merged = new Map<string, ConversationDto>();
      for (const c of order) if (ids.has(c.id)) merge(merged, c);
      expect([...merged.values()].sort((x, y) => x.id.localeCompare(y.id))).toEqual(expected);
    }
  });
});

describe("an inbox used for the first time", () => {
  /** A conversation as the directory had it before inboxes existed: no room fed any inbox about it. */
  async function directoryOnly(owner: string, member: string, rev: number) {
    const id = `pre${crypto.randomUUID().replaceAll("-", "")}`;
    await insertConversation(drizzle(env.DB), {
      id,
      title: "From before",
      direct: false,
      directKey: null,
      createdBy: owner,
      memberIds: [member],
      now: 1,
    });
    await env.DB.batch([
      env.DB.prepare("UPDATE conversations SET last_seq = 3, rev = ?, projected_version = ? WHERE id = ?").bind(
        rev,
        rev,
        id,
      ),
      env.DB.prepare("UPDATE participants SET last_read_seq = 1 WHERE conversation_id = ? AND user_id = ?").bind(
        id,
        member,
      ),
    ]);
    return id;
  }

  it("starts from the user's conversations in the directory, once", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const id = await directoryOnly(alice, bob, 4);
    expect(await totals(bob)).toMatchObject({ unreadTotal: 2, unreadConversations: 1 });
    const inbox = await connectInbox(bob, { since: 0 });
    const [seeded] = await catchUp(inbox, 1);
    expect(seeded).toMatchObject({ type: "conversation", conversation: { id, rev: 4, unreadCount: 2 } });
    // Seeded once: the directory changing behind its back is not read again.
    await env.DB.prepare("UPDATE participants SET last_read_seq = 3 WHERE conversation_id = ? AND user_id = ?")
      .bind(id, bob)
      .run();
    expect(await totals(bob)).toMatchObject({ unreadTotal: 2, unreadConversations: 1 });
  });

  it("does not bring back, from the directory, a conversation a room said the user left", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const id = await directoryOnly(alice, bob, 4);
    // The room's word (the user left at rev 5) reaches the inbox before its first use reads the directory.
    await env.INBOXES.getByName(bob).deliver([{ kind: "removed", conversationId: id, rev: 5 }]);
    expect(await totals(bob)).toMatchObject({ unreadTotal: 0, unreadConversations: 0 });
    const inbox = await connectInbox(bob, { since: 0 });
    const frames = await catchUp(inbox, 0);
    expect(frames.filter((f) => f.type === "conversation")).toEqual([]);
  });
});

describe("the inbox's routes and socket refuse what they should", () => {
  it("needs a token, and a ticket works once, for its own user only", async () => {
    await expectError(await call("/v1/inbox"), 401, "unauthenticated");
    await expectError(await call("/v1/inbox/ticket", { method: "POST" }), 401, "unauthenticated");
    const [bob, eve] = [uniqueUser("bob"), uniqueUser("eve")];
    const res = await call("/v1/inbox/ticket", { method: "POST", as: bob });
    expect(res.status).toBe(201);
    const { ticket } = (await res.json()) as { ticket: string };
    // Eve cannot turn Bob's ticket, or one naming Bob with her own secret, into Bob's inbox.
    const eves = ((await (await call("/v1/inbox/ticket", { method: "POST", as: eve })).json()) as { ticket: string })
      .ticket;
    const forged = `${ticket.split(".")[0]}.${eves.split(".")[1]}`;
    await expectError(await upgradeInbox(null, { ticket: forged }), 401, "unauthenticated");
    const inbox = await connectInbox(null, { ticket });
    expect(inbox.frames[0]).toMatchObject({ type: "inbox_ready", userId: bob });
    await expectError(await upgradeInbox(null, { ticket }), 401, "unauthenticated");
    for (const bad of ["", "x", "a.b", `${"A".repeat(300)}.b`]) {
      const answer = await upgradeInbox(null, { ticket: bad });
      expect([400, 401]).toContain(answer.status);
    }
  });

  it("answers bad queries 400, no upgrade 426, and refuses frames other than ping", async () => {
    const bob = uniqueUser("bob");
    await expectError(await upgradeInbox(bob, { since: -1 }), 400, "validation_failed");
    await expectError(await call("/v1/inbox/ws?since=abc", { as: bob }), 426, "upgrade_required");
    // X-User-Id is the Worker's to set: with bob's token and eve's name in it, it is bob's inbox.
    const eve = uniqueUser("eve");
    const spoofedUser = await connectInbox(bob, { headers: { "X-User-Id": eve } });
    expect(spoofedUser.frames[0]).toMatchObject({ type: "inbox_ready", userId: bob });
    // A spoofed X-Since is not the client's to set: without `since`, nothing is replayed.
    const conv = await createConversation(uniqueUser("alice"), [bob]);
    await fed(conv.id);
    const spoofed = await connectInbox(bob, { headers: { "X-Since": "0" } });
    expect(await catchUp(spoofed, 0)).toEqual([]);
    const inbox = await connectInbox(bob);
    inbox.send({ type: "send", content: "not here" });
    expect(await inbox.next("error")).toMatchObject({ code: "validation_failed" });
    inbox.ws.send(new Uint8Array([1, 2, 3]));
    expect((await inbox.waitClosed()).code).toBe(1003);
  });

  it("closes a socket that sent nothing, not even ping, for two minutes, and keeps one that pings", async () => {
    const bob = uniqueUser("bob");
    const silent = await connectInbox(bob);
    const pinging = await connectInbox(bob);
    pinging.send("ping");
    await pinging.next("pong" as never);
    const stub = env.INBOXES.getByName(bob);
    // Both were last heard from three minutes ago, as their attachments say; one has pinged since.
    await runInDurableObject(stub, (_i: UserInbox, state) => {
      for (const ws of state.getWebSockets()) ws.serializeAttachment({ lastSeenAt: Date.now() - 180_000 });
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await silent.waitClosed()).toMatchObject({ code: 1000, reason: "no frame or ping for too long" });
    expect(pinging.closed).toBeUndefined();
  });

  it("caps the sockets of one user", async () => {
    const bob = uniqueUser("bob");
    const open: Inbox[] = [];
    for (let i = 0; i < 10; i++) open.push(await connectInbox(bob));
    const refused = await upgradeInbox(bob);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Retry-After")).not.toBeNull();
    for (const s of open) s.close();
  });
});
