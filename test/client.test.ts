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
import type { ServerFrame } from "../src/schemas";
import { eventually, fed, projected, seedMessages, storedMessages, tokenFor, uniqueUser } from "./helpers";
import { clientFor, workerdConnector } from "./sdk";

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

  it.each([
    ["stops answering pings", 0],
    ["stops answering pings after the first pong", 1],
  ])("takes a connection that %s for dead, and reconnects", async (_, passed) => {
    const { alice, bob, conv } = await twoPeople();
    let connections = 0;
    // A network that lets the first `passed` pongs of each connection through and loses the others.
    const losesPongs: SocketConnector = async (url) => {
      const ws = await workerdConnector(url);
      connections++;
      let pongs = 0;
      return {
        send: (data) => ws.send(data),
        close: (code, reason) => ws.close(code, reason),
        addEventListener: (type: "message" | "close", listener: (event: never) => void) =>
          ws.addEventListener(type as "message", (event) => {
            if (type === "message" && (event as { data: unknown }).data === "pong" && pongs++ >= passed) return;
            listener(event as never);
          }),
      } as WebSocketLike;
    };
    const b = new ConversationSocket(clientFor(bob), conv.id, {
      ...fast,
      connect: losesPongs,
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

/**
 * A socket the test plays the server of, for frame orderings the real room cannot produce on demand: it
 * records what the SDK sends and delivers the frames the test gives it. It fakes the network, not the platform.
 */
class ScriptedSocket implements WebSocketLike {
  readonly sent: string[] = [];
  closedByClient: number | undefined;
  readonly #onMessage: ((event: { data: unknown }) => void)[] = [];
  readonly #onClose: ((event: { code: number; reason: string }) => void)[] = [];
  #closed = false;

  constructor(readonly url: string) {}

  /** The `since` the SDK connected with, or null. */
  get since() {
    return new URL(this.url).searchParams.get("since");
  }

  send(data: string) {
    if (this.#closed) throw new Error("send on a closed socket");
    this.sent.push(data);
  }

  close(code = 1000, reason = "") {
    this.closedByClient ??= code;
    this.drop(code, reason);
  }

  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: "message" | "close", listener: (event: never) => void) {
    if (type === "message") this.#onMessage.push(listener as (event: { data: unknown }) => void);
    else this.#onClose.push(listener as (event: { code: number; reason: string }) => void);
  }

  frame(frame: ServerFrame) {
    for (const listener of this.#onMessage) listener({ data: JSON.stringify(frame) });
  }

  /** The network or the server ends the connection. */
  drop(code = 1006, reason = "") {
    if (this.#closed) return;
    this.#closed = true;
    queueMicrotask(() => {
      for (const listener of this.#onClose) listener({ code, reason });
    });
  }

  /** The send frames the SDK wrote, in order. */
  sends() {
    return this.sent.filter((d) => d !== "ping").map((d) => JSON.parse(d) as { type: string; localId: string });
  }
}

/** A connector handing out ScriptedSockets; `socket(n)` waits for the n-th connection. */
function scripted() {
  const sockets: ScriptedSocket[] = [];
  const connect: SocketConnector = async (url) => {
    const socket = new ScriptedSocket(url);
    sockets.push(socket);
    return socket;
  };
  const socket = async (n: number) => {
    await eventually(() => sockets.length > n, 5_000, `connection ${n}`);
    return sockets[n] as ScriptedSocket;
  };
  return { sockets, connect, socket };
}

const readyFrame = (conversationId: string, userId: string, lastSeq: number): ServerFrame => ({
  type: "ready",
  conversationId,
  userId,
  lastSeq,
  participants: [],
  online: [],
  typing: [],
});

/** A promise that resolves once `gate.open()` is called: a network that is down until then. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describe("ConversationSocket across reconnects", () => {
  it("delivers a live message that overtakes the replay in seq order, and resumes from the contiguous seq", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = clientFor(alice);
    const [m1, m2, m3] = [
      await a.sendMessage(conv.id, { content: "one" }),
      await a.sendMessage(conv.id, { content: "two" }),
      await a.sendMessage(conv.id, { content: "three" }),
    ];
    const net = scripted();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect, since: 0 });
    const seen = record(b);
    const first = await net.socket(0);
    first.frame(readyFrame(conv.id, bob, 2));
    first.frame({ type: "message", message: m3 }); // live, before the replay is over
    first.frame({ type: "message", message: m1 }); // the replay
    expect(seen.messages.map((m) => m.seq)).toEqual([1]);
    expect(b.lastSeq).toBe(1);
    first.drop(); // before seq 2 of the replay arrived

    const second = await net.socket(1);
    expect(second.since).toBe("1");
    second.frame(readyFrame(conv.id, bob, 3));
    second.frame({ type: "message", message: m2 });
    second.frame({ type: "message", message: m3 });
    await eventually(() => seen.messages.length === 3, 2_000, "the rest of the replay");
    expect(seen.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(b.lastSeq).toBe(3);
    b.close();
  });

  it("holds its own ack that arrives before the end of a replay until the replay reaches it", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = clientFor(alice);
    const [m1, m2] = [
      await a.sendMessage(conv.id, { content: "one" }),
      await a.sendMessage(conv.id, { content: "two" }),
    ];
    const net = scripted();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect, since: 0 });
    const seen = record(b);
    const first = await net.socket(0);
    first.frame(readyFrame(conv.id, bob, 2));
    const sending = b.send("mine", "mine-1");
    await eventually(() => first.sends().some((f) => f.localId === "mine-1"), 2_000, "the send frame");
    const mine: Message = { ...m2, id: "mine", seq: 3, senderId: bob, content: "mine", localId: "mine-1" };
    first.frame({ type: "ack", localId: "mine-1", message: mine });
    expect(await sending).toMatchObject({ seq: 3, localId: "mine-1" }); // stored: the promise need not wait
    first.frame({ type: "message", message: m1 });
    expect(seen.messages.map((m) => m.seq)).toEqual([1]);
    first.drop();

    const second = await net.socket(1);
    expect(second.since).toBe("1");
    second.frame(readyFrame(conv.id, bob, 3));
    second.frame({ type: "message", message: m2 });
    second.frame({ type: "message", message: mine });
    await eventually(() => seen.messages.length === 3, 2_000, "the replay");
    expect(seen.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(b.pending()).toEqual([]);
    b.close();
  });

  it("gives an edit of a message it holds back right after that message", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = clientFor(alice);
    const [m1, m2] = [
      await a.sendMessage(conv.id, { content: "one" }),
      await a.sendMessage(conv.id, { content: "two" }),
    ];
    const net = scripted();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect, since: 0 });
    const events: string[] = [];
    b.on("message", (m) => events.push(`message ${m.seq} ${m.content}`));
    b.on("updated", (m) => events.push(`updated ${m.seq} ${m.content}`));
    const socket = await net.socket(0);
    socket.frame(readyFrame(conv.id, bob, 2));
    socket.frame({ type: "message", message: m2 });
    socket.frame({ type: "message_updated", message: { ...m2, content: "two, edited", editedAt: m2.createdAt } });
    expect(events).toEqual([]);
    socket.frame({ type: "message", message: m1 });
    expect(events).toEqual(["message 1 one", "message 2 two", "updated 2 two, edited"]);
    b.close();
  });

  it("sends one message at a time, waits out a rate limit and goes on from the refused one", async () => {
    const { bob, conv } = await twoPeople();
    const net = scripted();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect });
    const errors: unknown[] = [];
    b.on("error", (e) => errors.push(e));
    const socket = await net.socket(0);
    const sends = ["a", "b", "c"].map((id) => b.send(`content ${id}`, id));
    socket.frame(readyFrame(conv.id, bob, 0));
    const stored = (localId: string, seq: number): Message => ({
      id: `id-${localId}`,
      conversationId: conv.id,
      seq,
      senderId: bob,
      content: `content ${localId}`,
      localId,
      createdAt: new Date().toISOString(),
      editedAt: null,
      deletedAt: null,
    });
    const sentIds = () => socket.sends().map((f) => f.localId);
    await eventually(() => sentIds().length === 1, 2_000, "the first send");
    expect(sentIds()).toEqual(["a"]); // the next waits for its answer
    socket.frame({ type: "ack", localId: "a", message: stored("a", 1) });
    expect(sentIds()).toEqual(["a", "b"]);
    const refusedAt = Date.now();
    socket.frame({ type: "error", code: "rate_limited", message: "slow down", ref: "b", retryAfterMs: 300 });
    socket.frame({ type: "error", code: "rate_limited", message: "a late one", ref: "a", retryAfterMs: 5_000 });
    expect(b.outbox().map((e) => [e.localId, e.state])).toEqual([
      ["b", "queued"],
      ["c", "queued"],
    ]);
    await eventually(() => sentIds().length === 3, 2_000, "the resend");
    expect(Date.now() - refusedAt).toBeGreaterThanOrEqual(290);
    expect(sentIds()).toEqual(["a", "b", "b"]);
    socket.frame({ type: "error", code: "unavailable", message: "storage failed", ref: "b" });
    await eventually(() => sentIds().length === 4, 2_000, "the resend after unavailable");
    socket.frame({ type: "ack", localId: "b", message: stored("b", 2) });
    expect(sentIds()).toEqual(["a", "b", "b", "b", "c"]);
    socket.frame({ type: "ack", localId: "c", message: stored("c", 3) });
    expect((await Promise.all(sends)).map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(errors).toEqual([]); // refusals worth a retry are the outbox's business
    b.close();
  });

  it("retries a failed resync page while live messages wait, without an unhandled rejection", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = clientFor(alice);
    for (const content of ["one", "two", "three"]) await a.sendMessage(conv.id, { content });
    const live = await a.sendMessage(conv.id, { content: "four" });
    let pagesRefused = 0;
    // A network on which the first page of history fails.
    const flaky = new ChatClient({
      baseUrl: "https://chat.test",
      token: () => tokenFor(bob),
      fetch: async (r) => {
        if (r.method === "GET" && new URL(r.url).pathname.endsWith("/messages") && pagesRefused++ === 0) {
          return Response.json({ error: { code: "unavailable", message: "injected" } }, { status: 503 });
        }
        return exports.default.fetch(r);
      },
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (event: { reason: unknown }) => unhandled.push(event.reason);
    globalThis.addEventListener("unhandledrejection", onUnhandled as never);
    try {
      const net = scripted();
      const b = new ConversationSocket(flaky, conv.id, { ...fast, connect: net.connect, since: 0 });
      const seen = record(b);
      const socket = await net.socket(0);
      socket.frame(readyFrame(conv.id, bob, 3));
      socket.frame({ type: "resync", fromSeq: 0 });
      socket.frame({ type: "message", message: live });
      await eventually(() => seen.messages.length === 4, 5_000, "the pages and the live message");
      expect(seen.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
      expect(pagesRefused).toBeGreaterThanOrEqual(2);
      b.close();
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally {
      globalThis.removeEventListener("unhandledrejection", onUnhandled as never);
    }
  });

  it("stays closed when close() comes while it is connecting: the late socket is closed, no event follows", async () => {
    const { bob, conv } = await twoPeople();
    const network = gate();
    let closedByClient: number | undefined;
    let connecting = false;
    const late: SocketConnector = async (url) => {
      connecting = true;
      await network.opened;
      const ws = await workerdConnector(url);
      return {
        send: (data) => ws.send(data),
        close: (code, reason) => {
          closedByClient ??= code;
          ws.close(code, reason);
        },
        addEventListener: (type: "message" | "close", listener: (event: never) => void) =>
          ws.addEventListener(type as "message", listener as never),
      } as WebSocketLike;
    };
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: late });
    const events: string[] = [];
    for (const name of ["ready", "message", "status", "presence", "closed"] as const) {
      b.on(name, (value) => events.push(`${name}:${typeof value === "string" ? value : ""}`));
    }
    await eventually(() => connecting, 3_000, "the connection to start opening");
    b.close();
    expect(b.status).toBe("closed");
    const afterClose = events.length;
    network.open();
    await eventually(() => closedByClient !== undefined, 3_000, "the late socket to be closed");
    await new Promise((r) => setTimeout(r, 200));
    expect(b.status).toBe("closed");
    expect(events.slice(afterClose)).toEqual([]);
    expect(events.at(-1)).toBe("closed:");
  });

  it("returns the same promise for a second send with the same localId, and refuses other content for it", async () => {
    const { bob, conv } = await twoPeople();
    const network = gate();
    const b = new ConversationSocket(clientFor(bob), conv.id, {
      ...fast,
      connect: async (url) => {
        await network.opened;
        return workerdConnector(url);
      },
    });
    const first = b.send("same", "dup-1");
    const again = b.send("same", "dup-1");
    expect(again).toBe(first);
    const conflict = await b.send("other", "dup-1").catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(ChatApiError);
    expect(conflict).toMatchObject({ code: "idempotency_conflict" });
    expect(b.pending()).toEqual([{ localId: "dup-1", content: "same" }]);
    network.open();
    expect(await first).toMatchObject({ content: "same", localId: "dup-1" });
    expect((await storedMessages(conv.id)).filter((m) => m.localId === "dup-1")).toHaveLength(1);
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
