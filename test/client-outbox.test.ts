import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import {
  ChatApiError,
  ConversationSocket,
  type OutboxItem,
  type OutboxStorage,
  type SocketConnector,
  type WebSocketLike,
} from "../src/client";
import { eventually, storedMessages, uniqueUser } from "./helpers";
import { clientFor, workerdConnector } from "./sdk";

// The outbox of ConversationSocket against the real Worker: ordered under the send rate limit (a bucket of 20,
// refilled 5 per second), across reconnects, persisted in an injectable storage, its failures visible.

/** A network that is down until `up()`, and records how the server closed each socket. */
function network(initiallyUp = false) {
  let up!: () => void;
  const isUp = new Promise<void>((resolve) => {
    up = resolve;
  });
  if (initiallyUp) up();
  const closes: number[] = [];
  let connections = 0;
  const connect: SocketConnector = async (url) => {
    await isUp;
    const ws = await workerdConnector(url);
    connections++;
    ws.addEventListener("close", (event) => closes.push(event.code));
    return ws;
  };
  return { connect, up, closes, connections: () => connections };
}

/** A storage the test can look into; asynchronous, as an IndexedDB-backed one would be. */
function testStorage() {
  const data = new Map<string, string>();
  const storage: OutboxStorage = {
    get: async (key) => data.get(key) ?? null,
    set: async (key, value) => {
      data.set(key, value);
    },
    remove: async (key) => {
      data.delete(key);
    },
  };
  return { data, storage };
}

const fast = { backoff: { initialMs: 20, maxMs: 200 } };

async function twoPeople() {
  const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
  const conv = await clientFor(alice).createConversation({ participantIds: [bob], title: "outbox" });
  return { alice, bob, conv };
}

/** Every message of the conversation by REST, oldest first. */
async function history(userId: string, conversationId: string) {
  const messages = [];
  let after = 0;
  for (;;) {
    const page = await clientFor(userId).history(conversationId, { after, limit: 100 });
    messages.push(...page.messages);
    after = page.messages.at(-1)?.seq ?? after;
    if (!page.hasMore) return messages;
  }
}

const numbered = (n: number, prefix = "m") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe("ConversationSocket outbox: order under the rate limit", () => {
  it("stores 70 messages written while disconnected, all, in the order written, without a 4429", async () => {
    const { alice, bob, conv } = await twoPeople();
    const net = network();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect });
    const written = numbered(70);
    const sends = written.map((content, i) => b.send(content, `seventy-${i}`));
    expect(b.pending()).toHaveLength(70);
    net.up();
    await Promise.all(sends);
    expect((await history(alice, conv.id)).map((m) => m.content)).toEqual(written);
    expect(net.closes).not.toContain(4429);
    expect(b.pending()).toEqual([]);
    b.close();
  }, 60_000);

  it("keeps a burst of 40 in order across rate limits and reconnects, without a 4429", async () => {
    const { alice, bob, conv } = await twoPeople();
    const net = network(true);
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect });
    await eventually(() => b.status === "open", 5_000, "the socket to open");
    const written = numbered(40, "burst");
    let stored = 0;
    const sends = written.map((content, i) =>
      b.send(content, `burst-${i}`).then((m) => {
        stored++;
        return m;
      }),
    );
    // Past the first bucket: drop the connection while refusals and pauses are under way, twice.
    await eventually(() => stored >= 22, 10_000, "the first bucket");
    b.reconnect();
    await eventually(() => stored >= 28, 10_000, "more after the reconnect");
    await evictDurableObject(env.ROOMS.getByName(conv.id), { webSockets: "close" });
    await Promise.all(sends);
    expect((await history(alice, conv.id)).map((m) => m.content)).toEqual(written);
    expect(net.connections()).toBeGreaterThanOrEqual(3);
    expect(net.closes).not.toContain(4429);
    b.close();
  }, 60_000);
});

describe("ConversationSocket outbox: persisted", () => {
  it("resends what a closed socket left unsent from a new socket with the same storage, in order", async () => {
    const { alice, bob, conv } = await twoPeople();
    const other = await clientFor(alice).createConversation({ participantIds: [bob], title: "elsewhere" });
    const { data, storage } = testStorage();
    const down = network();
    const first = new ConversationSocket(clientFor(bob), conv.id, { ...fast, storage, connect: down.connect });
    const sends = ["first", "second", "third"].map((content) => first.send(content));
    for (const sent of sends) sent.catch(() => {}); // they reject when the socket closes, below
    await eventually(() => data.size === 1, 2_000, "the outbox to be saved");
    first.close(); // a page reload, or a switch to the other conversation
    await expect(sends[0]).rejects.toBeInstanceOf(ChatApiError);

    // The other conversation, with the same storage, sends none of them.
    const elsewhere = new ConversationSocket(clientFor(bob), other.id, {
      ...fast,
      storage,
      connect: network(true).connect,
    });
    await eventually(() => elsewhere.status === "open", 5_000, "the other conversation");
    expect(elsewhere.outbox()).toEqual([]);
    elsewhere.close();

    const snapshots: OutboxItem[][] = [];
    const again = new ConversationSocket(clientFor(bob), conv.id, { ...fast, storage, connect: network(true).connect });
    again.on("outbox", ({ entries }) => snapshots.push(entries));
    await eventually(async () => (await history(bob, conv.id)).length === 3, 5_000, "the resent messages");
    expect((await history(bob, conv.id)).map((m) => m.content)).toEqual(["first", "second", "third"]);
    expect((await history(bob, other.id)).map((m) => m.content)).toEqual([]);
    expect(snapshots[0]?.map((e) => [e.content, e.state])).toEqual([
      ["first", "queued"],
      ["second", "queued"],
      ["third", "queued"],
    ]);
    await eventually(() => again.outbox().length === 0 && data.size === 0, 2_000, "the outbox to empty");
    again.close();
  });

  it("keeps each user's outbox apart in one storage", async () => {
    const { alice, bob, conv } = await twoPeople();
    const { storage } = testStorage();
    const down = new ConversationSocket(clientFor(alice), conv.id, { ...fast, storage, connect: network().connect });
    down.send("alice's, unsent").catch(() => {});
    await eventually(() => down.outbox().length === 1, 2_000);
    down.close();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, storage, connect: network(true).connect });
    await eventually(() => b.status === "open", 5_000, "bob's socket");
    await b.send("bob's");
    expect((await history(bob, conv.id)).map((m) => [m.senderId, m.content])).toEqual([[bob, "bob's"]]);
    b.close();
  });

  it("defaults to localStorage in a browser, and to memory shared by the page's sockets elsewhere", async () => {
    const { bob, conv } = await twoPeople();
    const down = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: network().connect });
    down.send("kept in memory").catch(() => {});
    down.close();
    const again = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: network(true).connect });
    await eventually(async () => (await storedMessages(conv.id)).length === 1, 5_000, "the resend from memory");
    again.close();

    const saved = new Map<string, string>();
    vi.stubGlobal("localStorage", {
      getItem: (key: string) => saved.get(key) ?? null,
      setItem: (key: string, value: string) => saved.set(key, value),
      removeItem: (key: string) => saved.delete(key),
    });
    try {
      const offline = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: network().connect });
      offline.send("kept in localStorage").catch(() => {});
      await eventually(() => saved.size === 1, 2_000, "the localStorage entry");
      expect([...saved.values()][0]).toContain("kept in localStorage");
      offline.close();
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("ConversationSocket outbox: failures are visible", () => {
  it("marks a message refused for good as failed, goes on with the next, and retries or discards it", async () => {
    const { alice, bob, conv } = await twoPeople();
    await clientFor(bob).sendMessage(conv.id, { content: "original", localId: "taken" });
    const { data, storage } = testStorage();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, storage, connect: network(true).connect });
    const errors: string[] = [];
    b.on("error", (e) => errors.push(e.code));
    const refused = b.send("other content", "taken").catch((e: unknown) => e);
    const after = b.send("after the refused one");
    expect(await refused).toMatchObject({ code: "idempotency_conflict" });
    await after;
    expect(b.outbox()).toEqual([
      {
        localId: "taken",
        content: "other content",
        state: "failed",
        error: { code: "idempotency_conflict", message: expect.any(String) },
      },
    ]);
    expect(b.pending()).toEqual([]);
    expect(errors).toEqual(["idempotency_conflict"]);
    expect([...data.values()][0]).toContain("idempotency_conflict"); // a reload shows it too

    expect(b.retry("taken")).toBe(true); // sent again, in its place, and refused again
    await eventually(() => errors.length === 2, 3_000, "the second refusal");
    expect(b.outbox()).toMatchObject([{ localId: "taken", state: "failed" }]);
    expect(b.discard("taken")).toBe(true);
    expect(b.outbox()).toEqual([]);
    expect(b.retry("taken")).toBe(false);
    await eventually(() => data.size === 0, 2_000, "the storage to be cleared");
    expect((await history(alice, conv.id)).map((m) => m.content)).toEqual(["original", "after the refused one"]);
    b.close();
  });

  it("marks what is unsent as failed (not_found) when its user is removed, and emits nothing after closed", async () => {
    const { alice, bob, conv } = await twoPeople();
    // A network that loses bob's send frames: his message is still in the outbox when he is removed.
    const losesSends: SocketConnector = async (url) => {
      const ws = await workerdConnector(url);
      return {
        send: (data) => {
          if (!data.includes('"type":"send"')) ws.send(data);
        },
        close: (code, reason) => ws.close(code, reason),
        addEventListener: (type: "message" | "close", listener: (event: never) => void) =>
          ws.addEventListener(type as "message", listener as never),
      } as WebSocketLike;
    };
    const { data, storage } = testStorage();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, storage, connect: losesSends });
    const events: string[] = [];
    b.on("outbox", () => events.push("outbox"));
    b.on("closed", ({ code }) => events.push(`closed ${code}`));
    await eventually(() => b.status === "open", 5_000, "the socket to open");
    const unsent = b.send("never arrives").catch((e: unknown) => e);
    await eventually(() => b.outbox()[0]?.state === "sending", 2_000, "the send");
    await clientFor(alice).removeParticipant(conv.id, bob);
    expect(await unsent).toMatchObject({ code: "not_found" });
    expect(b.outbox()).toMatchObject([{ content: "never arrives", state: "failed", error: { code: "not_found" } }]);
    expect(events.at(-1)).toBe("closed 4403");
    await eventually(() => [...data.values()][0]?.includes("not_found"), 2_000, "the failure to be saved");
    const localId = b.outbox()[0]?.localId ?? "";
    expect(b.retry(localId)).toBe(false);
    // What can never be sent can still be let go of, here and in the saved copy: it must not stay for ever.
    expect(b.discard(localId)).toBe(true);
    expect(b.outbox()).toEqual([]);
    await eventually(() => [...data.values()].every((v) => !v.includes("never arrives")), 2_000, "the saved copy");
  });

  it("marks a message over the frame limit failed when the server closes on it (1009), and goes on", async () => {
    const { alice, bob, conv } = await twoPeople();
    const net = network(true);
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: net.connect });
    const huge = b.send("x".repeat(40 * 1024)).catch((e: unknown) => e);
    const next = b.send("the next one");
    expect(await huge).toMatchObject({ code: "payload_too_large" });
    await next;
    expect(net.closes.filter((code) => code === 1009)).toHaveLength(1); // not sent again on every reconnect
    expect(b.outbox()).toMatchObject([{ state: "failed", error: { code: "payload_too_large" } }]);
    expect((await history(alice, conv.id)).map((m) => m.content)).toEqual(["the next one"]);
    b.close();
  });

  it("refuses a localId the server would not accept at once, instead of waiting forever", async () => {
    const { bob, conv } = await twoPeople();
    const b = new ConversationSocket(clientFor(bob), conv.id, { ...fast, connect: network(true).connect });
    const refused = await b.send("hello", "x".repeat(65)).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "validation_failed" });
    expect(b.outbox()).toEqual([]);
    b.close();
  });
});
