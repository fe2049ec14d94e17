import { evictDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  ChatApiError,
  ChatClient,
  type Conversation,
  ConversationSocket,
  InboxSocket,
  type InboxSocketEvents,
  type Message,
  mergeConversation,
  mergeConversations,
  removeConversation,
  type SocketConnector,
  type SocketStatus,
  type WebSocketLike,
} from "../src/client";
import { eventually, fed, projected, seedMessages, storedMessages, tokenFor, uniqueUser } from "./helpers";

/** The SDK against the real Worker: its fetch, and sockets upgraded through it. */
const clientFor = (userId: string) =>
  new ChatClient({
    baseUrl: "https://chat.test",
    token: () => tokenFor(userId),
    fetch: (r) => exports.default.fetch(r),
  });

const workerdConnector: SocketConnector = async (url) => {
  const res = await exports.default.fetch(
    new Request(url.replace(/^ws/, "http"), { headers: { Upgrade: "websocket" } }),
  );
  if (!res.webSocket) throw new ChatApiError(res.status, "network", `upgrade failed: ${res.status}`);
  res.webSocket.accept();
  return res.webSocket as unknown as WebSocketLike;
};

const fast = { connect: workerdConnector, backoff: { initialMs: 20, maxMs: 200 } };

/** Records what a ConversationSocket emits. */
function record(socket: ConversationSocket) {
  const seen = {
    messages: [] as Message[],
    statuses: [] as SocketStatus[],
    typing: [] as unknown[],
    closed: [] as number[],
  };
  socket.on("message", (m) => seen.messages.push(m));
  socket.on("status", (s) => seen.statuses.push(s));
  socket.on("typing", (t) => seen.typing.push(t));
  socket.on("closed", (c) => seen.closed.push(c.code));
  return seen;
}

const opened = (socket: ConversationSocket) => eventually(() => socket.status === "open", 5_000, "the socket to open");

async function twoPeople() {
  const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
  const conv = await clientFor(alice).createConversation({ participantIds: [bob], title: "sdk" });
  return { alice, bob, conv };
}

describe("ChatClient (REST)", () => {
  it("calls every conversation and message route and returns typed values", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = clientFor(alice);
    const b = clientFor(bob);
    expect(conv).toMatchObject({ title: "sdk", direct: false, lastSeq: 0 });
    const sent = await b.sendMessage(conv.id, { content: "hi", localId: "sdk-1" });
    expect(sent).toMatchObject({ seq: 1, senderId: bob, localId: "sdk-1" });
    await projected(conv.id); // the list is the directory's, eventually consistent with the room
    expect((await a.listConversations({ limit: 5 })).conversations[0]).toMatchObject({ id: conv.id, unreadCount: 1 });
    expect((await a.history(conv.id)).messages.map((m) => m.content)).toEqual(["hi"]);
    expect(await a.markRead(conv.id, 1)).toMatchObject({ userId: alice, lastReadSeq: 1 });
    expect(await b.editMessage(conv.id, 1, "hello")).toMatchObject({ content: "hello" });
    expect(await a.deleteMessage(conv.id, 1)).toMatchObject({ content: "" });
    await a.setTyping(conv.id, true);
    expect((await a.ticket(conv.id)).ticket).toEqual(expect.any(String));
    const carol = uniqueUser("carol");
    expect((await a.addParticipants(conv.id, [carol])).participants).toHaveLength(3);
    await a.removeParticipant(conv.id, carol);
    expect((await a.getConversation(conv.id)).participants).toHaveLength(2);
  });

  it("throws ChatApiError with the contract's code, status and retry hint", async () => {
    const { alice, conv } = await twoPeople();
    const stranger = clientFor(uniqueUser("eve"));
    const missing = await stranger.getConversation(conv.id).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ChatApiError);
    expect(missing).toMatchObject({ status: 404, code: "not_found", retryable: false });
    const invalid = await clientFor(alice)
      .sendMessage(conv.id, { content: "   " })
      .catch((e: unknown) => e);
    expect(invalid).toMatchObject({ status: 400, code: "validation_failed", details: [{ path: "content" }] });
  });
});

describe("ConversationSocket", () => {
  it("sends, acknowledges and delivers each message once, and throttles typing", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = new ConversationSocket(clientFor(alice), conv.id, fast);
    const b = new ConversationSocket(clientFor(bob), conv.id, fast);
    const seenA = record(a);
    const seenB = record(b);
    await Promise.all([opened(a), opened(b)]);

    const stored = await a.send("from the sdk");
    expect(stored).toMatchObject({ seq: 1, senderId: alice, content: "from the sdk" });
    expect(a.pending()).toEqual([]);
    await eventually(() => seenB.messages.length === 1);
    expect(seenA.messages.map((m) => m.seq)).toEqual([1]); // one's own message is delivered too, once

    for (let i = 0; i < 5; i++) a.typing();
    await eventually(() => seenB.typing.length >= 1);
    await b.send("reply"); // a round trip later, the typing frames have all arrived
    expect(seenB.typing).toEqual([{ userId: alice, typing: true }]);
    a.close();
    b.close();
    expect(seenA.closed).toEqual([1000]);
  });

  it("reconnects after a restart, resumes from its last seq and resends its outbox exactly once", async () => {
    const { alice, bob, conv } = await twoPeople();
    // A first retry after 400 to 800 ms leaves a window to send in while disconnected.
    const b = new ConversationSocket(clientFor(bob), conv.id, {
      ...fast,
      since: 0,
      backoff: { initialMs: 800, maxMs: 800 },
    });
    const seen = record(b);
    await opened(b);
    const a = clientFor(alice);
    await a.sendMessage(conv.id, { content: "one" });
    await eventually(() => seen.messages.length === 1);

    await evictDurableObject(env.ROOMS.getByName(conv.id), { webSockets: "close" });
    await eventually(() => b.status === "reconnecting", 5_000, "the drop");
    expect(b.pending()).toEqual([]);
    const queued = b.send("sent while away", "outbox-1"); // kept in the outbox until the socket is back
    await a.sendMessage(conv.id, { content: "two" });
    await a.sendMessage(conv.id, { content: "three" });

    expect(b.pending()).toEqual([{ localId: "outbox-1", content: "sent while away" }]);
    const stored = await queued;
    await eventually(() => seen.messages.length === 4, 5_000, "four messages");
    expect(seen.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    expect(seen.messages.map((m) => m.content).sort()).toEqual(["one", "sent while away", "three", "two"]);
    expect(seen.statuses).toContain("reconnecting");
    expect(b.status).toBe("open");
    expect((await storedMessages(conv.id)).filter((m) => m.senderId === bob && m.localId === "outbox-1")).toHaveLength(
      1,
    );
    expect(stored.localId).toBe("outbox-1");
    b.close();
  });

  it("pages REST after a resync, in order and without duplicates, then goes on live", async () => {
    const { alice, bob, conv } = await twoPeople();
    await seedMessages(conv.id, alice, 1300);
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, since: 50 });
    const seen = record(b);
    await eventually(() => seen.messages.length === 1250, 15_000, "the resync pages");
    await clientFor(alice).sendMessage(conv.id, { content: "live" });
    await eventually(() => seen.messages.length === 1251, 5_000, "the live message");
    expect(seen.messages.map((m) => m.seq)).toEqual(Array.from({ length: 1251 }, (_, i) => 51 + i));
    b.close();
  });

  it("takes a connection that stops answering pings for dead, and reconnects", async () => {
    const { alice, bob, conv } = await twoPeople();
    let connections = 0;
    // A network that loses every pong (and nothing else).
    const deafToPongs: SocketConnector = async (url) => {
      const ws = await workerdConnector(url);
      connections++;
      return {
        send: (data) => ws.send(data),
        close: (code, reason) => ws.close(code, reason),
        addEventListener: (type: "message" | "close", listener: (event: never) => void) =>
          ws.addEventListener(type as "message", (event) => {
            if (type === "message" && (event as { data: unknown }).data === "pong") return;
            listener(event as never);
          }),
      } as WebSocketLike;
    };
    const b = new ConversationSocket(clientFor(bob), conv.id, {
      ...fast,
      connect: deafToPongs,
      pingIntervalMs: 100,
      pongTimeoutMs: 150,
    });
    await opened(b);
    await eventually(() => connections >= 2, 5_000, "a reconnect");
    await opened(b);
    const seen = record(b);
    await clientFor(alice).sendMessage(conv.id, { content: "still here" });
    await eventually(() => seen.messages.length === 1, 5_000);
    b.close();
  });

  it("stops for good, rejecting its outbox, when its user is removed", async () => {
    const { alice, bob, conv } = await twoPeople();
    const b = new ConversationSocket(clientFor(bob), conv.id, fast);
    const seen = record(b);
    await opened(b);
    await clientFor(alice).removeParticipant(conv.id, bob);
    await eventually(() => seen.closed.length === 1, 5_000, "the close");
    expect(seen.closed).toEqual([4403]);
    expect(b.status).toBe("closed");
    await expect(b.send("too late")).rejects.toBeInstanceOf(ChatApiError);
  });

  it("reconnects at once when asked, and takes its own replayed message as acknowledged", async () => {
    const { bob, conv } = await twoPeople();
    let dropAcks = true;
    // A network that loses acks while `dropAcks` holds: the message is stored but the sender never hears so.
    const lossy: SocketConnector = async (url) => {
      const ws = await workerdConnector(url);
      return {
        send: (data) => ws.send(data),
        close: (code, reason) => ws.close(code, reason),
        addEventListener: (type: "message" | "close", listener: (event: never) => void) =>
          ws.addEventListener(type as "message", (event) => {
            const data = (event as { data: unknown }).data;
            if (dropAcks && typeof data === "string" && data.includes('"type":"ack"')) return;
            listener(event as never);
          }),
      } as WebSocketLike;
    };
    const b = new ConversationSocket(clientFor(bob), conv.id, {
      connect: lossy,
      since: 0,
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    const seen = record(b);
    await opened(b);
    const sending = b.send("ack lost", "lost-ack");
    await eventually(async () => (await storedMessages(conv.id)).length === 1);
    expect(b.pending()).toHaveLength(1);
    dropAcks = false;
    const startedAt = Date.now();
    b.reconnect(); // without it, the next try would be a minute away
    expect(await sending).toMatchObject({ seq: 1, localId: "lost-ack" });
    expect(Date.now() - startedAt).toBeLessThan(10_000);
    await opened(b);
    expect(b.pending()).toEqual([]);
    expect(seen.messages.map((m) => m.seq)).toEqual([1]);
    b.close();
  });
});

/** A Conversation as alice sees it, for the pure merge tests. */
function state(id: string, over: Partial<Conversation> & { at?: string; aliceRead?: number } = {}): Conversation {
  const { at = "2026-11-25T12:00:00.000Z", aliceRead = 0, ...rest } = over;
  const lastSeq = rest.lastSeq ?? 0;
  return {
    id,
    title: null,
    direct: false,
    createdBy: "alice",
    createdAt: "2026-11-25T11:00:00.000Z",
    updatedAt: at,
    rev: 1,
    lastSeq,
    lastMessage: lastSeq > 0 ? { seq: lastSeq, senderId: "bob", preview: `#${lastSeq}`, createdAt: at } : null,
    participants: [
      {
        userId: "alice",
        role: "owner",
        joinedAt: "2026-11-25T11:00:00.000Z",
        lastReadSeq: aliceRead,
        lastDeliveredSeq: aliceRead,
      },
      {
        userId: "bob",
        role: "member",
        joinedAt: "2026-11-25T11:00:00.000Z",
        lastReadSeq: lastSeq,
        lastDeliveredSeq: lastSeq,
      },
    ],
    unreadCount: Math.max(0, lastSeq - aliceRead),
    ...rest,
  };
}

const ids = (list: Conversation[]) => list.map((c) => c.id);

describe("mergeConversation (the inbox's merge rule)", () => {
  const a = state("a", { at: "2026-11-25T12:00:01.000Z", lastSeq: 1 });
  const b = state("b", { at: "2026-11-25T12:00:02.000Z", lastSeq: 1 });
  const c = state("c", { at: "2026-11-25T12:00:03.000Z" });

  it("adds, replaces and orders by most recent activity, like the REST list, without changing its input", () => {
    const list = [c, b, a];
    const frozen = JSON.stringify(list);
    const moved = mergeConversation(list, {
      ...a,
      rev: 2,
      lastSeq: 2,
      updatedAt: "2026-11-25T12:00:04.000Z",
      unreadCount: 2,
    });
    expect(ids(moved)).toEqual(["a", "c", "b"]);
    expect(moved[0]).toMatchObject({ lastSeq: 2, unreadCount: 2 });
    expect(JSON.stringify(list)).toBe(frozen);
    expect(ids(mergeConversation(list, state("d", { at: "2026-11-25T11:59:00.000Z" })))).toEqual(["c", "b", "a", "d"]);
    // Same time: the greater id first, as the list's keyset does.
    expect(ids(mergeConversations([], [state("m"), state("n")]))).toEqual(["n", "m"]);
    expect(ids(removeConversation(list, "b"))).toEqual(["c", "a"]);
  });

  it("never lets an older rev overwrite a newer one, in either order", () => {
    const newer = state("a", { rev: 5, lastSeq: 3, title: "new", at: "2026-11-25T12:00:05.000Z" });
    const older = state("a", { rev: 4, lastSeq: 2, title: "old", at: "2026-11-25T12:00:04.000Z" });
    for (const [first, second] of [
      [newer, older],
      [older, newer],
    ] as const) {
      const [merged] = mergeConversation([first], second, "alice");
      expect(merged).toMatchObject({ rev: 5, lastSeq: 3, title: "new", unreadCount: 3 });
      expect(merged?.lastMessage?.preview).toBe("#3");
    }
    // A REST page (the list lags behind by up to 1 s) merged after the inbox's frames leaves them in place.
    const [fromPage] = mergeConversations([newer], [older, state("z", { at: "2026-11-25T10:00:00.000Z" })], "alice");
    expect(fromPage).toMatchObject({ id: "a", rev: 5, title: "new" });
  });

  it("only moves the user's own read marker forward, and counts unread from it", () => {
    // Read up to 3 on this device (rev 6); a later message from bob (rev 7) carries a marker that lags.
    const read = state("a", { rev: 6, lastSeq: 3, aliceRead: 3 });
    const laggingMarker = state("a", { rev: 7, lastSeq: 4, aliceRead: 1 });
    for (const [first, second] of [
      [read, laggingMarker],
      [laggingMarker, read],
    ] as const) {
      const [merged] = mergeConversation([first], second, "alice");
      expect(merged).toMatchObject({ rev: 7, lastSeq: 4, unreadCount: 1 });
      expect(merged?.participants.find((p) => p.userId === "alice")?.lastReadSeq).toBe(3);
      expect(merged?.participants.find((p) => p.userId === "bob")?.lastReadSeq).toBe(4);
      // Without the user's id, their marker is what unreadCount implies.
      expect(mergeConversation([first], second)[0]).toMatchObject({ rev: 7, unreadCount: 1 });
    }
    // An older rev with a newer own marker still moves it: the read marker of the user only grows.
    const [marked] = mergeConversation([state("a", { rev: 8, lastSeq: 4, aliceRead: 2 })], read, "alice");
    expect(marked).toMatchObject({ rev: 8, unreadCount: 1 });
    expect(marked?.participants.find((p) => p.userId === "alice")?.lastReadSeq).toBe(3);
  });
});

/** Records what an InboxSocket emits. */
function recordInbox(inbox: InboxSocket) {
  const seen = {
    ready: [] as InboxSocketEvents["ready"][],
    changes: [] as InboxSocketEvents["conversation"][],
    removed: [] as string[],
    resyncs: [] as number[],
    statuses: [] as SocketStatus[],
  };
  inbox.on("ready", (r) => seen.ready.push(r));
  inbox.on("conversation", (c) => seen.changes.push(c));
  inbox.on("removed", (r) => seen.removed.push(r.conversationId));
  inbox.on("resync", (r) => seen.resyncs.push(r.fromVersion));
  inbox.on("status", (s) => seen.statuses.push(s));
  return seen;
}

const inboxOpen = (inbox: InboxSocket) => eventually(() => inbox.status === "open", 5_000, "the inbox to open");

describe("InboxSocket", () => {
  it("keeps a REST list live: a new message moves its conversation to the top with its unread count", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = clientFor(alice);
    const older = await a.createConversation({ participantIds: [bob], title: "older" });
    const newer = await a.createConversation({ participantIds: [bob], title: "newer" });
    await Promise.all([projected(older.id), projected(newer.id)]);
    let list = (await a.listConversations()).conversations;
    expect(ids(list)).toEqual([newer.id, older.id]);

    const inbox = new InboxSocket(a, fast);
    const seen = recordInbox(inbox);
    inbox.on("conversation", ({ conversation }) => {
      list = mergeConversation(list, conversation, alice);
    });
    await inboxOpen(inbox);
    expect(seen.ready[0]).toMatchObject({ userId: alice, unreadTotal: 0 });
    await clientFor(bob).sendMessage(older.id, { content: "to the top" });
    await eventually(() => list[0]?.id === older.id, 3_000, "the conversation to move up");
    expect(list[0]).toMatchObject({ unreadCount: 1, lastMessage: { preview: "to the top" } });
    expect(inbox.totals).toEqual({ unreadTotal: 1, unreadConversations: 1 });
    expect(inbox.version).toBe(seen.changes.at(-1)?.version);

    await a.markRead(older.id, 1); // the user's own marker, from another device
    await eventually(() => list[0]?.unreadCount === 0, 3_000, "the read marker");
    expect(inbox.totals).toEqual({ unreadTotal: 0, unreadConversations: 0 });
    await a.removeParticipant(newer.id, alice);
    await eventually(() => seen.removed.includes(newer.id), 3_000, "the removal");
    inbox.close();
    expect(inbox.status).toBe("closed");
  });

  it("reconnects from the last version it saw and gets what changed meanwhile, once", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await clientFor(alice).createConversation({ participantIds: [bob] });
    const urls: string[] = [];
    const connect: SocketConnector = (url) => {
      urls.push(url);
      return workerdConnector(url);
    };
    // The next try a minute away: the changes below are made while the inbox is away, for sure.
    const inbox = new InboxSocket(clientFor(alice), { connect, backoff: { initialMs: 60_000, maxMs: 60_000 } });
    const seen = recordInbox(inbox);
    await inboxOpen(inbox);
    await clientFor(bob).sendMessage(conv.id, { content: "one" });
    await eventually(() => seen.changes.some((c) => c.conversation.lastSeq === 1), 3_000, "the first message");
    const before = inbox.version ?? 0;

    await evictDurableObject(env.INBOXES.getByName(alice), { webSockets: "close" });
    await eventually(() => inbox.status === "reconnecting", 5_000, "the drop");
    await clientFor(bob).sendMessage(conv.id, { content: "two" });
    await clientFor(bob).sendMessage(conv.id, { content: "three" });
    await fed(conv.id);
    inbox.reconnect();
    await eventually(() => seen.changes.some((c) => c.conversation.lastSeq === 3), 5_000, "the catch-up");
    expect(new URL(urls[1] ?? "").searchParams.get("since")).toBe(String(before));
    expect(seen.ready).toHaveLength(2);
    expect(seen.resyncs).toEqual([]);
    // Two changes while away, one replayed frame with the latest state.
    const replayed = seen.changes.filter((c) => c.version > before);
    expect(replayed.map((c) => c.conversation.lastSeq)).toEqual([3]);
    expect(inbox.version).toBe(replayed[0]?.version);
    expect(inbox.totals).toEqual({ unreadTotal: 3, unreadConversations: 1 });
    inbox.close();
  });

  it("emits resync when the inbox cannot replay from the version asked for, then goes on live", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await clientFor(alice).createConversation({ participantIds: [bob] });
    const inbox = new InboxSocket(clientFor(alice), { ...fast, since: 1_000_000 });
    const seen = recordInbox(inbox);
    await eventually(() => seen.resyncs.length === 1, 5_000, "the resync");
    expect(seen.resyncs).toEqual([1_000_000]);
    expect(inbox.version).toBe(seen.ready[0]?.version);
    await clientFor(bob).sendMessage(conv.id, { content: "after the resync" });
    await eventually(() => seen.changes.some((c) => c.conversation.lastSeq === 1), 3_000, "a live frame");
    inbox.close();
  });
});
