import { describe, expect, it } from "vitest";
import {
  LiveConversation,
  type LiveConversationSnapshot,
  memoryOutboxStorage,
  messageStatus,
  type SocketConnector,
} from "../src/client";
import { eventually, seedMessages, uniqueUser } from "./helpers";
import { clientFor, gate, workerdConnector } from "./sdk";

// LiveConversation, the SDK's store of one open conversation, against the real Worker: history pages and live
// messages in seq order, each once; what is sent shows pending, then stored; receipts, typing, presence.

const fast = { connect: workerdConnector, backoff: { initialMs: 20, maxMs: 200 } };

const seqs = (s: LiveConversationSnapshot) => s.messages.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const opened = (live: LiveConversation) =>
  eventually(
    () => live.getSnapshot().loaded && live.getSnapshot().status === "open",
    5_000,
    "the conversation to open",
  );

async function twoPeople() {
  const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
  const conv = await clientFor(alice).createConversation({ participantIds: [bob], title: "live" });
  return { alice, bob, conv };
}

describe("LiveConversation", () => {
  it("shows the newest page, pages older ones back, and appends live messages, each seq once in order", async () => {
    const { alice, bob, conv } = await twoPeople();
    await seedMessages(conv.id, bob, 45);
    const live = new LiveConversation(clientFor(alice), conv.id, { ...fast, pageSize: 20 });
    await opened(live);
    expect(seqs(live.getSnapshot())).toEqual(range(26, 45));
    expect(live.getSnapshot().hasOlder).toBe(true);
    await live.loadOlder();
    expect(seqs(live.getSnapshot())).toEqual(range(6, 45));
    await live.loadOlder();
    expect(seqs(live.getSnapshot())).toEqual(range(1, 45));
    expect(live.getSnapshot().hasOlder).toBe(false);

    await clientFor(bob).sendMessage(conv.id, { content: "live one" });
    await eventually(() => live.getSnapshot().messages.length === 46, 3_000, "the live message");
    expect(seqs(live.getSnapshot())).toEqual(range(1, 46));
    await clientFor(bob).editMessage(conv.id, 46, "edited");
    await eventually(() => live.getSnapshot().messages.at(-1)?.content === "edited", 3_000, "the edit");
    expect(seqs(live.getSnapshot())).toEqual(range(1, 46));
    live.close();
  });

  it("pages in what was sent between the first page and the socket's ready", async () => {
    const { alice, bob, conv } = await twoPeople();
    await seedMessages(conv.id, bob, 3);
    const network = gate();
    const connect: SocketConnector = async (url) => {
      await network.opened;
      return workerdConnector(url);
    };
    const live = new LiveConversation(clientFor(alice), conv.id, { connect, backoff: fast.backoff });
    await eventually(() => live.getSnapshot().loaded, 3_000, "the first page");
    expect(seqs(live.getSnapshot())).toEqual([1, 2, 3]);
    // Sent while the socket is on its way: after the page, before the `ready` live messages start from.
    for (const content of ["four", "five", "six"]) await clientFor(bob).sendMessage(conv.id, { content });
    network.open();
    await eventually(() => live.getSnapshot().messages.length === 6, 3_000, "the gap paged in");
    await clientFor(bob).sendMessage(conv.id, { content: "seven" });
    await eventually(() => live.getSnapshot().messages.length === 7, 3_000, "a live message");
    expect(seqs(live.getSnapshot())).toEqual(range(1, 7));
    live.close();
  });

  it("shows a message pending from send until stored, never twice, across a time offline", async () => {
    const { alice, conv } = await twoPeople();
    const network = gate();
    const connect: SocketConnector = async (url) => {
      await network.opened;
      return workerdConnector(url);
    };
    const live = new LiveConversation(clientFor(alice), conv.id, {
      connect,
      backoff: fast.backoff,
      storage: memoryOutboxStorage(),
    });
    const seen: LiveConversationSnapshot[] = [];
    live.subscribe(() => seen.push(live.getSnapshot()));
    await eventually(() => live.getSnapshot().loaded, 3_000, "the first page");
    const stored = live.send("while offline");
    expect(live.getSnapshot().pending).toMatchObject([{ content: "while offline", state: "queued" }]);
    expect(live.getSnapshot().messages).toEqual([]);

    network.open();
    const message = await stored;
    expect(message).toMatchObject({ seq: 1, senderId: alice, content: "while offline" });
    await eventually(() => live.getSnapshot().messages.length === 1, 3_000, "the stored message");
    expect(live.getSnapshot().pending).toEqual([]);
    const shows = (s: LiveConversationSnapshot) =>
      s.pending.filter((p) => p.content === "while offline").length +
      s.messages.filter((m) => m.content === "while offline").length;
    // From the send on, every state the store went through shows it exactly once.
    const fromSend = seen.slice(seen.findIndex((s) => s.pending.length > 0));
    expect(fromSend.map(shows)).toEqual(fromSend.map(() => 1));
    expect(fromSend.some((s) => s.pending[0]?.state === "sending")).toBe(true);
    live.close();
  });

  it("keeps markers, typing and presence: ticks go sent, delivered, read", async () => {
    const { alice, bob, conv } = await twoPeople();
    const a = new LiveConversation(clientFor(alice), conv.id, fast);
    await opened(a);
    const first = await a.send("anyone?");
    const statusOf = (message: { seq: number; senderId: string }) => {
      const { participants, markers } = a.getSnapshot();
      return messageStatus(message, participants, markers);
    };
    expect(statusOf(first)).toBe("sent");

    // Delivered means sent to one of bob's sockets (API.md): so a message sent while his is open.
    const b = new LiveConversation(clientFor(bob), conv.id, fast);
    await opened(b);
    await eventually(() => a.getSnapshot().online.includes(bob), 3_000, "bob online");
    const stored = await a.send("are you there?");
    const status = () => statusOf(stored);
    await eventually(() => status() === "delivered", 3_000, "delivered");
    expect(statusOf(first)).toBe("delivered");
    b.markRead(stored.seq);
    await eventually(() => status() === "read", 3_000, "read");
    expect(a.getSnapshot().markers[bob]).toEqual({ lastReadSeq: 2, lastDeliveredSeq: 2 });

    b.typing();
    await eventually(() => a.getSnapshot().typing.includes(bob), 3_000, "bob typing");
    expect(b.getSnapshot().typing).toEqual([]); // one's own typing is not shown
    b.stopTyping();
    await eventually(() => a.getSnapshot().typing.length === 0, 3_000, "bob stops typing");
    // A message from bob says he read up to it, without a receipt.
    const reply = await b.send("yes");
    await eventually(() => a.getSnapshot().messages.length === 3, 3_000, "the reply");
    expect(a.getSnapshot().markers[bob]).toEqual({ lastReadSeq: reply.seq, lastDeliveredSeq: reply.seq });
    b.close();
    await eventually(() => !a.getSnapshot().online.includes(bob), 3_000, "bob offline");
    a.close();
  });

  it("says so when the user is not a participant, and stops", async () => {
    const { conv } = await twoPeople();
    const live = new LiveConversation(clientFor(uniqueUser("eve")), conv.id, fast);
    await eventually(() => live.getSnapshot().status === "closed", 5_000, "the end");
    expect(live.getSnapshot().error).toMatchObject({ code: "not_found" });
    expect(live.getSnapshot().loaded).toBe(false);
    live.close();
  });
});
