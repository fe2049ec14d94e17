import { evictDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  ChatApiError,
  ChatClient,
  ConversationSocket,
  type Message,
  type SocketConnector,
  type SocketStatus,
  type WebSocketLike,
} from "../src/client";
import { eventually, projected, seedMessages, storedMessages, tokenFor, uniqueUser } from "./helpers";

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
