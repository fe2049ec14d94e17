import { evictDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ConversationList, type ConversationListSnapshot, type SocketConnector } from "../src/client";
import { eventually, fed, projected, uniqueUser } from "./helpers";
import { clientFor, gate, workerdConnector } from "./sdk";

// ConversationList, the SDK's live conversation list, against the real Worker: REST pages and the inbox socket
// merged (API.md, "The inbox"), frames held during a REST load, reconnects from the last version applied.

const fast = { connect: workerdConnector, backoff: { initialMs: 20, maxMs: 200 } };

const ids = (s: ConversationListSnapshot) => s.conversations.map((c) => c.id);
const isList = (r: Request) => new URL(r.url).pathname === "/v1/conversations" && r.method === "GET";
const ready = (list: ConversationList) =>
  eventually(() => list.getSnapshot().loaded && list.getSnapshot().status === "open", 5_000, "the list to load");

describe("ConversationList", () => {
  it("loads the list and keeps it live: order, unread counts, totals, removals", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = clientFor(alice);
    const older = await a.createConversation({ participantIds: [bob], title: "older" });
    const newer = await a.createConversation({ participantIds: [bob], title: "newer" });
    const list = new ConversationList(a, fast);
    let changes = 0;
    list.subscribe(() => changes++);
    await ready(list);
    expect(ids(list.getSnapshot())).toEqual([newer.id, older.id]);
    // The same object until something changes (what useSyncExternalStore needs).
    const before = list.getSnapshot();
    expect(list.getSnapshot()).toBe(before);

    await clientFor(bob).sendMessage(older.id, { content: "to the top" });
    await eventually(() => list.getSnapshot().conversations[0]?.id === older.id, 3_000, "the move up");
    expect(changes).toBeGreaterThan(0);
    const moved = list.getSnapshot();
    expect(moved).not.toBe(before);
    expect(moved.conversations[0]).toMatchObject({ unreadCount: 1, lastMessage: { preview: "to the top" } });
    expect(moved).toMatchObject({ unreadTotal: 1, unreadConversations: 1, hasMore: false, error: null });

    await a.markRead(older.id, 1); // from another device of alice
    await eventually(() => list.getSnapshot().unreadTotal === 0, 3_000, "the read marker");
    expect(list.getSnapshot().conversations[0]?.unreadCount).toBe(0);
    await a.removeParticipant(newer.id, alice);
    await eventually(() => !ids(list.getSnapshot()).includes(newer.id), 3_000, "the removal");
    list.close();
    const closed = list.getSnapshot();
    await clientFor(bob).sendMessage(older.id, { content: "after close" });
    await new Promise((r) => setTimeout(r, 1_200));
    expect(list.getSnapshot()).toBe(closed);
  });

  it("holds what the inbox says during a REST load and applies it after the page", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = clientFor(alice);
    const leaving = await a.createConversation({ participantIds: [bob], title: "leaving" });
    const staying = await a.createConversation({ participantIds: [bob], title: "staying" });
    // The page is read at once and answered only when the test lets it go: older than the frames.
    const release = gate();
    let pageRead = false;
    const slow = clientFor(alice, async (r) => {
      const response = await exports.default.fetch(r);
      if (!isList(r)) return response;
      pageRead = true;
      await release.opened;
      return response;
    });
    // What reached the client, whether the list applied it or not.
    const frames: { type: string; conversationId?: string; conversation?: { id: string } }[] = [];
    const recording: SocketConnector = async (url) => {
      const ws = await workerdConnector(url);
      ws.addEventListener("message", ({ data }) => {
        if (typeof data === "string" && data !== "pong") frames.push(JSON.parse(data));
      });
      return ws;
    };
    // Live frames only (no catch-up): the page is the only way the list learns of `leaving` and `staying`.
    const list = new ConversationList(slow, { ...fast, connect: recording, since: null, userId: alice });
    await eventually(() => pageRead && list.getSnapshot().status === "open", 5_000, "the page read, the inbox open");
    const created = await clientFor(bob).createConversation({ participantIds: [alice], title: "created meanwhile" });
    await a.removeParticipant(leaving.id, alice);
    await clientFor(bob).sendMessage(staying.id, { content: "meanwhile" });
    const about = (id: string, type: string) =>
      frames.some((f) => f.type === type && (f.conversationId ?? f.conversation?.id) === id);
    await eventually(
      () =>
        about(created.id, "conversation") &&
        about(leaving.id, "conversation_removed") &&
        about(staying.id, "conversation"),
      5_000,
      "the three frames",
    );
    expect(list.getSnapshot()).toMatchObject({ loading: true, conversations: [], version: undefined }); // held

    release.open();
    await eventually(() => !list.getSnapshot().loading, 3_000, "the load to end");
    const after = list.getSnapshot();
    // A conversation the page could not have, a removal the page does not show, a change newer than the page.
    expect(ids(after)).toEqual([staying.id, created.id]);
    expect(after.conversations[0]).toMatchObject({ lastSeq: 1, unreadCount: 1 });
    expect(after).toMatchObject({ unreadTotal: 1, unreadConversations: 1 });
    list.close();
  });

  it("reconnects from the last version it applied, and ends with what changed while it was away", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await clientFor(alice).createConversation({ participantIds: [bob] });
    const urls: string[] = [];
    const away = gate();
    const connect: SocketConnector = async (url) => {
      urls.push(url);
      if (urls.length > 1) await away.opened;
      return workerdConnector(url);
    };
    const list = new ConversationList(clientFor(alice), { connect, backoff: { initialMs: 20, maxMs: 200 } });
    await ready(list);
    await clientFor(bob).sendMessage(conv.id, { content: "one" });
    await eventually(() => list.getSnapshot().conversations[0]?.lastSeq === 1, 3_000, "the first message");
    const applied = list.getSnapshot().version;

    await evictDurableObject(env.INBOXES.getByName(alice), { webSockets: "close" });
    await eventually(() => list.getSnapshot().status === "reconnecting", 5_000, "the drop");
    await clientFor(bob).sendMessage(conv.id, { content: "two" });
    await clientFor(bob).sendMessage(conv.id, { content: "three" });
    await fed(conv.id);
    away.open();
    await eventually(() => list.getSnapshot().conversations[0]?.lastSeq === 3, 5_000, "the catch-up");
    expect(new URL(urls[1] ?? "").searchParams.get("since")).toBe(String(applied));
    expect(list.getSnapshot()).toMatchObject({ status: "open", unreadTotal: 3, unreadConversations: 1 });
    expect(list.getSnapshot().version).toBeGreaterThan(applied ?? 0);
    list.close();
  });

  it("loads again after a resync, and pages on with loadMore", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = clientFor(alice);
    const made: { id: string }[] = [];
    for (let i = 0; i < 5; i++) made.push(await a.createConversation({ participantIds: [bob], title: `c${i}` }));
    let loads = 0;
    const counting = clientFor(alice, (r) => {
      if (isList(r)) loads++;
      return exports.default.fetch(r);
    });
    // A version the inbox never gave: it answers resync, and the list is loaded again.
    const list = new ConversationList(counting, { ...fast, since: 1_000_000, pageSize: 2 });
    await eventually(() => loads === 2 && !list.getSnapshot().loading, 5_000, "the load after the resync");
    const newestFirst = made.map((c) => c.id).reverse();
    expect(ids(list.getSnapshot())).toEqual(newestFirst.slice(0, 2));
    expect(list.getSnapshot().hasMore).toBe(true);
    await list.loadMore();
    await list.loadMore();
    expect(ids(list.getSnapshot())).toEqual(newestFirst);
    expect(list.getSnapshot().hasMore).toBe(false);
    await list.loadMore(); // nothing more to load: no request
    expect(loads).toBe(4);

    // Live frames go on after the resync.
    await clientFor(bob).sendMessage((made[0] as { id: string }).id, { content: "oldest, now newest" });
    await eventually(() => ids(list.getSnapshot())[0] === made[0]?.id, 3_000, "a live frame after the resync");
    list.close();
  });

  it("retries a first load that failed, and says why meanwhile", async () => {
    const alice = uniqueUser("alice");
    const conv = await clientFor(alice).createConversation({ participantIds: [uniqueUser("bob")] });
    await projected(conv.id);
    let failures = 2;
    const flaky = clientFor(alice, (r) => {
      if (isList(r) && failures-- > 0)
        return Promise.resolve(Response.json({ error: { code: "unavailable", message: "down" } }, { status: 503 }));
      return exports.default.fetch(r);
    });
    const list = new ConversationList(flaky, { ...fast, since: null });
    const errors: (string | undefined)[] = [];
    list.subscribe(() => errors.push(list.getSnapshot().error?.code));
    await ready(list);
    expect(errors).toContain("unavailable");
    expect(list.getSnapshot()).toMatchObject({ error: null, loaded: true });
    expect(ids(list.getSnapshot())).toEqual([conv.id]);
    list.close();
  });
});
