// The demo page: sign in by name, a conversation list with unread counts, and one conversation live, all
// through the SDK in src/client. Bundled into public/app.js by scripts/build-demo.mjs. No framework: a few
// render functions that rebuild small parts of the page from the state they are given.
import {
  ChatApiError,
  ChatClient,
  type Conversation,
  ConversationSocket,
  InboxSocket,
  type InboxTotals,
  type Message,
  mergeConversation,
  mergeConversations,
  type OutboxItem,
  type OutboxSnapshot,
  type Participant,
  removeConversation,
  type SocketStatus,
} from "../src/client";

const PAGE_SIZE = 30;
const LIST_SIZE = 50;
/** The contract's user id (src/schemas.ts USER_ID), repeated here so the page does not bundle zod. */
const USER_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
/** Per tab, so two windows of one browser can be two people, and kept across a reload. */
const SESSION_KEY = "edge-chat-demo-session";
/**
 * At most one read marker per this many ms: the server's bucket of read markers and typing holds 30 and
 * refills 10 per second, and it closes a socket (4429) that keeps being refused.
 */
const READ_COALESCE_MS = 200;
/** Within this many pixels of the bottom, a new message scrolls the conversation down with it. */
const STICK_TO_BOTTOM_PX = 60;
/** A one-off refusal (not a condition that holds) is shown this long, or until the next success. */
const REFUSAL_SHOWN_MS = 8_000;
/** The narrow layout of style.css: the list or the conversation, not both. */
const narrow = window.matchMedia("(max-width: 640px)");

type TickStatus = OutboxItem["state"] | "sent" | "delivered" | "read";
const TICKS: Record<TickStatus, { mark: string; label: string }> = {
  queued: { mark: "waiting…", label: "Waiting to be sent" },
  sending: { mark: "sending…", label: "Sending" },
  failed: { mark: "not sent", label: "Not sent" },
  sent: { mark: "✓", label: "Sent" },
  delivered: { mark: "✓✓", label: "Delivered" },
  read: { mark: "✓✓", label: "Read" },
};

const byId = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; title?: string } = {},
  ...children: Node[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  if (props.title) node.title = props.title;
  node.append(...children);
  return node;
}

const timeOf = (iso: string) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * An error line that says what is wrong now. Each condition is set while it holds and cleared when it ends
 * (a reconnect, a successful send, an edit of the form), so no text outlives its cause.
 */
class ErrorLine {
  readonly #conditions = new Map<string, string>();
  readonly #timers = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(readonly target: HTMLElement) {}

  set(kind: string, text: string) {
    this.#conditions.set(kind, text);
    this.#show();
  }

  /** For an event rather than a condition: shown until cleared, or for `ms` at most. */
  setFor(kind: string, text: string, ms: number) {
    this.set(kind, text);
    clearTimeout(this.#timers.get(kind));
    this.#timers.set(
      kind,
      setTimeout(() => this.clear(kind), ms),
    );
  }

  clear(kind: string) {
    clearTimeout(this.#timers.get(kind));
    this.#timers.delete(kind);
    if (this.#conditions.delete(kind)) this.#show();
  }

  clearAll() {
    for (const kind of [...this.#conditions.keys()]) this.clear(kind);
  }

  #show() {
    this.target.textContent = [...this.#conditions.values()].join(" ");
  }
}

const signInErrors = new ErrorLine(byId("sign-in-error"));
const sidebarErrors = new ErrorLine(byId("new-error"));
const conversationErrors = new ErrorLine(byId("conversation-error"));

// ---- Sign-in: a token per name from the dev-only endpoint -----------------------------------------------

interface Session {
  userId: string;
  token: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

async function devToken(userId: string): Promise<Session> {
  const res = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userId }),
  });
  if (res.status === 404) {
    throw new Error("Sign-in by name is off on this server: add DEV_AUTH=1 to .dev.vars and restart npm start.");
  }
  if (!res.ok) throw new Error(res.status === 400 ? "Use letters, digits and . _ : @ - only." : `HTTP ${res.status}`);
  const { token } = (await res.json()) as { token: string };
  const payload = JSON.parse(atob((token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/"))) as {
    exp: number;
  };
  return { userId, token, expiresAt: payload.exp * 1000 };
}

function loadSession(): Session | undefined {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    return saved && USER_ID.test(saved.userId) ? saved : undefined;
  } catch {
    return undefined;
  }
}

let session: Session | undefined;

/** The ChatClient's token source: the saved token, or a fresh one shortly before it expires. */
async function currentToken(): Promise<string> {
  if (!session) throw new ChatApiError(401, "unauthenticated", "Signed out");
  if (session.expiresAt - Date.now() < 60_000) {
    session = await devToken(session.userId);
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }
  return session.token;
}

const client = new ChatClient({ baseUrl: location.origin, token: currentToken });

// ---- Connection status --------------------------------------------------------------------------------

/** The header shows the open conversation's socket, or the inbox's when none is open (the list, on a phone). */
function showStatus() {
  const status: SocketStatus | "idle" = view?.socket.status ?? inbox?.status ?? "idle";
  const connection = byId("connection");
  connection.dataset.status = status;
  const offline = navigator.onLine ? "" : " (offline)";
  connection.textContent = {
    idle: "",
    connecting: "Connecting…",
    open: "Live",
    reconnecting: `Reconnecting…${offline}`,
    closed: "Disconnected",
  }[status];
  document.body.classList.toggle("reconnecting", status === "reconnecting");
}

// ---- The conversation list, kept live by the inbox socket ----------------------------------------------
//
// One REST load of the list, and the user's inbox socket: each of its frames is merged into the list (the
// higher rev wins, one's own read marker only grows) and the list and badges are drawn again. No polling:
// the list is loaded again only when the inbox says it cannot catch up (`resync`), or when it stops.

let conversations: Conversation[] = [];
let inbox: InboxSocket | undefined;
let inboxTotals: InboxTotals | undefined;
/** False until a REST load of the list succeeds, and again after a `resync`: the next `ready` loads it. */
let listCurrent = false;
/** While a REST load is under way: what the inbox said meanwhile (null: removed), applied again after it. */
let heldDuringLoad: Map<string, Conversation | null> | undefined;
/** The REST load under way, and for whom. */
let loadingList: { userId: string; done?: Promise<void> } | undefined;

const nameOf = (conversation: Conversation, me: string) =>
  conversation.title ??
  (conversation.participants
    .map((p) => p.userId)
    .filter((id) => id !== me)
    .join(", ") ||
    "just you");

/** Loads the list by REST (one load at a time) and merges it with what the inbox has said. */
function loadList(): Promise<void> {
  const me = session?.userId;
  if (!me) return Promise.resolve();
  if (loadingList?.userId === me) return loadingList.done ?? Promise.resolve();
  const held = new Map<string, Conversation | null>();
  heldDuringLoad = held;
  const load: { userId: string; done?: Promise<void> } = { userId: me };
  loadingList = load;
  load.done = (async () => {
    try {
      const page = (await client.listConversations({ limit: LIST_SIZE })).conversations;
      if (me !== session?.userId) return;
      // The page is the list now; what the inbox said during the load and what it already had of the same
      // conversations are merged into it, so that neither a late page nor an early frame moves anything back.
      const loaded = new Set(page.map((c) => c.id));
      let next = mergeConversations(
        page,
        conversations.filter((c) => loaded.has(c.id)),
        me,
      );
      for (const [id, conversation] of held) {
        next = conversation ? mergeConversation(next, conversation, me) : removeConversation(next, id);
      }
      conversations = next;
      listCurrent = true;
      renderList();
    } catch {
      // Offline or restarting: the inbox's next `ready` loads it again.
    } finally {
      if (heldDuringLoad === held) heldDuringLoad = undefined;
      if (loadingList === load) loadingList = undefined;
    }
  })();
  return load.done;
}

function openInbox() {
  inbox?.close();
  // The first connection asks for the latest state of everything the inbox holds (`since: 0`): the REST
  // list lags acknowledgements by up to 1 s, and this way nothing that changed meanwhile is missed. Every
  // reconnect resumes from the last version seen.
  const socket = new InboxSocket(client, { since: 0, backoff: { initialMs: 500, maxMs: 5_000 } });
  inbox = socket;
  socket.on("status", (status) => {
    byId("sidebar").dataset.inbox = status;
    showStatus();
  });
  socket.on("ready", () => {
    if (!listCurrent) void loadList();
  });
  socket.on("conversation", ({ conversation }) => {
    heldDuringLoad?.set(conversation.id, conversation);
    conversations = mergeConversation(conversations, conversation, session?.userId);
    renderList();
  });
  socket.on("removed", ({ conversationId }) => {
    heldDuringLoad?.set(conversationId, null);
    conversations = removeConversation(conversations, conversationId);
    renderList();
  });
  socket.on("totals", (totals) => {
    inboxTotals = totals;
    renderList();
  });
  socket.on("resync", () => {
    listCurrent = false;
    void loadList();
  });
  socket.on("closed", ({ code }) => {
    // Stopped for good (not by signing out): the list as it is now, once.
    if (code !== 1000 && inbox === socket) void loadList();
  });
}

function renderList() {
  const me = session?.userId ?? "";
  let listUnread = 0;
  let hiddenUnread = 0;
  const items = conversations.map((conversation) => {
    const isOpen = view?.id === conversation.id;
    // The open conversation counts what its reader has not scrolled to yet: its read marker follows what is
    // seen, and reaches the inbox a moment later.
    const unread = isOpen && view && document.visibilityState === "visible" ? view.unseen() : conversation.unreadCount;
    listUnread += unread;
    hiddenUnread += Math.max(0, conversation.unreadCount - unread);
    const last = conversation.lastMessage;
    const preview = last ? `${last.senderId === me ? "you" : last.senderId}: ${last.preview || "(deleted)"}` : "";
    const link = element(
      "a",
      {},
      element("span", { className: "name", text: nameOf(conversation, me) }),
      element("span", { className: "preview", text: preview }),
    );
    link.href = `#${encodeURIComponent(conversation.id)}`;
    if (unread > 0) link.append(element("span", { className: "unread", text: String(unread), title: "unread" }));
    const item = element("li", { className: isOpen ? "conversation active" : "conversation" }, link);
    item.dataset.id = conversation.id;
    return item;
  });
  byId("conversations").replaceChildren(...items);
  // The inbox's total covers every conversation, also those past the first page of the list.
  const totalUnread = inboxTotals ? Math.max(0, inboxTotals.unreadTotal - hiddenUnread) : listUnread;
  const badge = byId("unread-total");
  badge.hidden = totalUnread === 0;
  badge.textContent = String(totalUnread);
  badge.title = `${totalUnread} unread`;
  document.title = totalUnread > 0 ? `(${totalUnread}) edge-chat` : "edge-chat";
}

// ---- One conversation, live ---------------------------------------------------------------------------
//
// The socket is opened at once, before any REST answer: it is what holds the conversation's unsent messages
// (saved in localStorage by the SDK), so they show as soon as the page or the conversation opens, even
// offline. Its first connection starts live at the `ready`'s lastSeq; the history comes by REST and is
// joined to it without a gap (see #fillGap).

/** Which of two copies of a message is the later one (an edit or a delete is newer than what it changed). */
const versionOf = (message: Message) => message.deletedAt ?? message.editedAt ?? message.createdAt;

class ConversationView {
  readonly messages = new Map<number, Message>();
  readonly #rendered = new Map<number, HTMLLIElement>();
  /** The unsent messages as drawn, by localId, with what they were drawn from (redrawn only when it changes). */
  #unsentDrawn = new Map<string, { key: string; item: HTMLLIElement }>();
  readonly participants = new Map<string, Participant>();
  readonly online = new Set<string>();
  readonly typing = new Set<string>();
  readonly socket: ConversationSocket;
  #outbox: OutboxSnapshot = { entries: [], storageError: null };
  #title: string;
  #hasOlder = false;
  /** The lastSeq of the first `ready`: the socket delivers every message after it. */
  #liveFrom: number | undefined;
  /** Every message from the REST history up to this seq is in `messages` (undefined: none loaded yet). */
  #historyTo: number | undefined;
  #loading = false;
  #filling = false;
  #retryLoad: ReturnType<typeof setTimeout> | undefined;
  #everReady = false;
  #markedRead = 0;
  #markSoon: ReturnType<typeof setTimeout> | undefined;
  /** The unseen count the list was last drawn with. */
  #unseenDrawn = -1;
  #disposed = false;

  constructor(
    readonly id: string,
    readonly me: string,
    /** The conversation does not exist, or the user is not in it. */
    readonly onNotFound: () => void,
  ) {
    const listed = conversations.find((c) => c.id === id);
    this.#title = listed ? nameOf(listed, me) : "";
    if (listed) this.#setParticipants(listed.participants);
    this.socket = new ConversationSocket(client, id, { backoff: { initialMs: 500, maxMs: 5_000 } });
    this.#listen(this.socket);
    this.#outbox = { entries: this.socket.outbox(), storageError: null };
    void this.#load();
  }

  #listen(socket: ConversationSocket) {
    socket.on("status", () => {
      showStatus();
      this.render("keep");
    });
    socket.on("ready", (ready) => this.#ready(ready));
    socket.on("message", (message) => this.#message(message));
    socket.on("updated", (message) => {
      if (!this.messages.has(message.seq)) return;
      this.#add([message]);
      this.render("keep");
    });
    socket.on("outbox", (snapshot) => {
      this.#outbox = snapshot;
      if (snapshot.storageError) {
        conversationErrors.set("storage", `${snapshot.storageError}. Unsent messages may be lost on a reload.`);
      } else conversationErrors.clear("storage");
      this.render("keep");
    });
    socket.on("typing", ({ userId, typing }) => {
      if (typing) this.typing.add(userId);
      else this.typing.delete(userId);
      this.#renderTyping();
    });
    socket.on("presence", ({ userId, online }) => {
      if (online) this.online.add(userId);
      else this.online.delete(userId);
      this.#renderPeople();
    });
    socket.on("receipt", ({ userId, lastReadSeq, lastDeliveredSeq }) => {
      const participant = this.participants.get(userId);
      if (!participant) return;
      participant.lastReadSeq = Math.max(participant.lastReadSeq, lastReadSeq);
      participant.lastDeliveredSeq = Math.max(participant.lastDeliveredSeq, lastDeliveredSeq);
      this.render("keep");
    });
    socket.on("participants", (participants) => {
      this.#setParticipants(participants);
      this.render("keep");
    });
    socket.on("error", (error) => this.#refused(error));
    socket.on("closed", ({ code }) => {
      if (code !== 4403 || this.#disposed) return;
      // Refused before it ever connected: not a participant (or no such conversation).
      if (!this.#everReady) return this.onNotFound();
      conversationErrors.set("removed", "You are no longer in this conversation.");
      this.render("keep");
    });
  }

  #ready(ready: { participants: Participant[]; online: string[]; typing: string[]; lastSeq: number }) {
    if (!this.#everReady) this.#liveFrom = ready.lastSeq;
    this.#everReady = true;
    this.#setParticipants(ready.participants);
    this.online.clear();
    for (const userId of ready.online) this.online.add(userId);
    this.typing.clear();
    for (const userId of ready.typing) this.typing.add(userId);
    // Connected again: what failed while it was not is worth trying again, and its error is stale.
    conversationErrors.clear("refused");
    conversationErrors.clear("older");
    if (this.#historyTo === undefined) void this.#load();
    else void this.#fillGap();
    this.render("keep");
    this.markSeen();
  }

  #message(message: Message) {
    this.#add([message]);
    // Sending moves the sender's own markers to their message (API.md), without a receipt of its own: a
    // reply sent before its sender's page said "read" still shows everything before it read.
    const sender = this.participants.get(message.senderId);
    if (sender) {
      sender.lastReadSeq = Math.max(sender.lastReadSeq, message.seq);
      sender.lastDeliveredSeq = Math.max(sender.lastDeliveredSeq, message.seq);
    }
    this.typing.delete(message.senderId);
    const mine = message.senderId === this.me;
    if (mine) conversationErrors.clear("refused");
    this.render(mine ? "bottom" : "keep");
    this.markSeen();
  }

  /** A refused frame. A send's refusal shows on its message (the outbox), so only the others are told here. */
  #refused(error: { code: string; message: string; ref?: string; retryAfterMs?: number }) {
    if (error.ref !== undefined) return;
    if (error.code === "rate_limited") {
      // A read marker or a typing frame over the bucket: nothing the reader must act on. The marker is sent
      // again once the bucket has refilled.
      this.#markedRead = 0;
      setTimeout(() => this.markSeen(), error.retryAfterMs ?? 1_000);
      return;
    }
    conversationErrors.setFor("refused", `Refused: ${error.message}`, REFUSAL_SHOWN_MS);
  }

  /**
   * The conversation and its newest page by REST. When it fails it is tried again on the next `ready` (the
   * network is back), or after a few seconds if the device says it is online.
   */
  async #load() {
    if (this.#loading || this.#historyTo !== undefined || this.#disposed) return;
    this.#loading = true;
    clearTimeout(this.#retryLoad);
    try {
      const [conversation, page] = await Promise.all([
        client.getConversation(this.id),
        client.history(this.id, { limit: PAGE_SIZE }),
      ]);
      if (this.#disposed) return;
      this.#title = nameOf(conversation, this.me);
      // The socket's participants are newer than a REST answer that may have been read before them.
      if (!this.#everReady) this.#setParticipants(conversation.participants);
      this.#add(page.messages);
      this.#hasOlder = page.hasMore;
      this.#historyTo = page.messages[0]?.seq ?? 0;
      conversationErrors.clear("load");
      this.render("bottom");
      this.markSeen();
      void this.#fillGap();
    } catch (err) {
      if (this.#disposed) return;
      if (err instanceof ChatApiError && err.code === "not_found") return this.onNotFound();
      conversationErrors.set(
        "load",
        navigator.onLine
          ? `Could not load the messages (${reasonOf(err)}); trying again.`
          : "Offline: the messages load when the network is back.",
      );
      if (navigator.onLine) this.#retryLoad = setTimeout(() => void this.#load(), 5_000);
    } finally {
      this.#loading = false;
    }
  }

  /**
   * A REST page read before the socket's first `ready` may end before the messages the socket starts after:
   * those in between are paged by REST (oldest first). A failure leaves `#historyTo` where it got to; the
   * next `ready` goes on from there.
   */
  async #fillGap() {
    const until = this.#liveFrom;
    if (until === undefined || this.#historyTo === undefined || this.#filling) return;
    this.#filling = true;
    try {
      while (this.#historyTo < until && !this.#disposed) {
        const page = await client.history(this.id, { after: this.#historyTo, limit: 100 });
        this.#add(page.messages);
        const last = page.messages.at(-1)?.seq;
        this.#historyTo = page.hasMore && last !== undefined ? last : until;
        this.render("keep");
      }
    } catch {
      // Offline again: the next `ready` goes on.
    } finally {
      this.#filling = false;
    }
  }

  dispose() {
    // What was on screen was seen: a read marker still waiting for its turn goes now, not never.
    if (this.#markSoon !== undefined) this.#markRead();
    this.#disposed = true;
    clearTimeout(this.#markSoon);
    clearTimeout(this.#retryLoad);
    // Unsent messages stay saved; the next socket of this conversation sends them.
    this.socket.close();
  }

  send(content: string) {
    this.socket.stopTyping();
    // How it went shows on the message itself, from the outbox: stored, or failed with Retry and Discard. The
    // promise also rejects when the conversation is closed (switched away from): the message is kept for the
    // next socket of this conversation, so that is not a failure to report.
    this.socket.send(content).catch(() => {});
    this.render("bottom");
  }

  retry(localId: string) {
    this.socket.retry(localId);
  }

  discard(localId: string) {
    if (!this.socket.discard(localId)) return;
    // After a removal the socket tells nothing more: redraw from what its outbox holds now.
    this.#outbox = { ...this.#outbox, entries: this.socket.outbox() };
    this.render("keep");
  }

  async loadOlder() {
    const oldest = Math.min(...this.messages.keys());
    const button = byId<HTMLButtonElement>("older");
    button.disabled = true;
    try {
      const page = await client.history(this.id, { before: oldest, limit: PAGE_SIZE });
      if (this.#disposed) return;
      conversationErrors.clear("older");
      this.#add(page.messages);
      this.#hasOlder = page.hasMore;
      this.render("anchor-bottom");
    } catch (err) {
      conversationErrors.set("older", `Could not load older messages: ${reasonOf(err)}.`);
    } finally {
      button.disabled = false;
    }
  }

  /**
   * Marks what has been seen as read, while the page is visible: up to the newest message scrolled into view,
   * so one that arrives while the reader is back in the history stays unread until they scroll to it. At most
   * one `read` frame per READ_COALESCE_MS.
   */
  markSeen() {
    if (this.#markSoon !== undefined) return;
    this.#markSoon = setTimeout(() => {
      this.#markSoon = undefined;
      this.#markRead();
    }, READ_COALESCE_MS);
  }

  #markRead() {
    if (this.#disposed || document.visibilityState !== "visible" || this.socket.status !== "open") return;
    const seen = this.#newestInView();
    if (seen > this.#readUpTo() && this.socket.markRead(seen)) this.#markedRead = seen;
    this.#showUnseen();
  }

  #readUpTo(): number {
    return Math.max(this.participants.get(this.me)?.lastReadSeq ?? 0, this.#markedRead);
  }

  /** The newest message whose end is in view (or, for one taller than the view, its top). */
  #newestInView(): number {
    const scroller = byId("scroller");
    if (scroller.clientHeight === 0) return 0;
    const bottom = scroller.getBoundingClientRect().bottom;
    for (const seq of [...this.#rendered.keys()].sort((a, b) => b - a)) {
      const rect = (this.#rendered.get(seq) as HTMLLIElement).getBoundingClientRect();
      if (rect.height === 0) continue;
      if (rect.top + Math.min(rect.height, scroller.clientHeight) <= bottom + 1) return seq;
    }
    return 0;
  }

  /** Messages of others after what is read and below what is in view. */
  unseen(): number {
    const seen = Math.max(this.#readUpTo(), this.#newestInView());
    let count = 0;
    for (const message of this.messages.values()) {
      if (message.seq > seen && message.senderId !== this.me && !message.deletedAt) count++;
    }
    return count;
  }

  /** The "new messages" button at the bottom, and the list's badge, follow what is unseen. */
  #showUnseen() {
    const count = this.unseen();
    const hint = byId("new-below");
    hint.hidden = count === 0;
    hint.textContent = `${count} new message${count === 1 ? "" : "s"} ↓`;
    if (count === this.#unseenDrawn) return;
    this.#unseenDrawn = count;
    renderList();
  }

  scrolled() {
    if (this.#disposed) return;
    this.#showUnseen();
    this.markSeen();
  }

  tickOf(seq: number): TickStatus {
    const others = [...this.participants.values()].filter((p) => p.userId !== this.me);
    if (others.length === 0) return "sent";
    if (others.every((p) => p.lastReadSeq >= seq)) return "read";
    if (others.every((p) => p.lastDeliveredSeq >= seq)) return "delivered";
    return "sent";
  }

  /** Rebuilds the message list (reusing each message's element) and keeps the scroll where it belongs. */
  render(scroll: "bottom" | "keep" | "anchor-bottom") {
    if (this.#disposed) return;
    const scroller = byId("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
    const items: HTMLLIElement[] = [];
    for (const seq of [...this.messages.keys()].sort((a, b) => a - b)) {
      const message = this.messages.get(seq) as Message;
      let item = this.#rendered.get(seq);
      if (!item) {
        item = this.#messageItem(message);
        this.#rendered.set(seq, item);
      }
      if (message.senderId === this.me) setTick(item, this.tickOf(seq));
      items.push(item);
    }
    items.push(...this.#unsentItems());
    byId("messages").replaceChildren(...items);
    byId("older").hidden = !this.#hasOlder;
    byId("conversation-title").textContent = this.#title;
    // Closed for good (removed): what is written here could not be sent, so nothing can be written.
    setComposerEnabled(this.socket.status !== "closed");
    this.#renderPeople();
    this.#renderTyping();
    if (scroll === "bottom" || (scroll === "keep" && fromBottom < STICK_TO_BOTTOM_PX)) {
      scroller.scrollTop = scroller.scrollHeight;
    } else if (scroll === "anchor-bottom") {
      scroller.scrollTop = scroller.scrollHeight - scroller.clientHeight - fromBottom;
    }
    this.#showUnseen();
  }

  /** The outbox's messages after the stored ones, in the order written, each with its state. */
  #unsentItems(): HTMLLIElement[] {
    // After a removal the socket is closed for good: what is unsent can no longer be retried, only discarded.
    const canAct = this.socket.status !== "closed";
    const drawn = new Map<string, { key: string; item: HTMLLIElement }>();
    const items = this.#outbox.entries.map((entry) => {
      const key = JSON.stringify([entry.state, entry.error?.message, canAct]);
      const before = this.#unsentDrawn.get(entry.localId);
      // The same element while nothing changes: a click on Retry is not lost to a redraw in between.
      const item = before?.key === key ? before.item : this.#unsentItem(entry, canAct);
      drawn.set(entry.localId, { key, item });
      return item;
    });
    this.#unsentDrawn = drawn;
    return items;
  }

  #unsentItem(entry: OutboxItem, canAct: boolean): HTMLLIElement {
    const item = this.#messageItem({ content: entry.content, senderId: this.me });
    item.classList.add("pending", entry.state);
    item.dataset.localId = entry.localId;
    item.dataset.state = entry.state;
    setTick(item, entry.state);
    if (entry.state !== "failed") return item;
    const retry = element("button", { className: "retry", text: "Retry" });
    const discard = element("button", { className: "discard", text: "Discard" });
    for (const [button, action] of [
      [retry, "retry"],
      [discard, "discard"],
    ] as const) {
      button.type = "button";
      button.dataset.action = action;
    }
    retry.disabled = !canAct;
    const why = element("span", { className: "reason", text: `Not sent: ${failureText(entry)}` });
    item.append(element("div", { className: "failure" }, why, retry, discard));
    return item;
  }

  #messageItem(message: Pick<Message, "content" | "senderId"> & Partial<Message>): HTMLLIElement {
    const mine = message.senderId === this.me;
    const meta = element("div", { className: "meta" });
    if (!mine) meta.append(element("span", { className: "sender", text: message.senderId }));
    if (message.createdAt) meta.append(element("time", { text: timeOf(message.createdAt), title: message.createdAt }));
    if (message.editedAt && !message.deletedAt) meta.append(element("span", { className: "edited", text: "edited" }));
    const text = message.deletedAt
      ? element("p", { className: "content deleted", text: "message deleted" })
      : element("p", { className: "content", text: message.content });
    const item = element("li", { className: mine ? "message mine" : "message" }, meta, text);
    if (message.seq !== undefined) item.dataset.seq = String(message.seq);
    item.dataset.sender = message.senderId;
    return item;
  }

  #renderPeople() {
    const people = [...this.participants.keys()].sort().map((userId) => {
      const online = userId === this.me || this.online.has(userId);
      const item = element("li", {
        className: online ? "person online" : "person",
        text: userId === this.me ? `${userId} (you)` : userId,
        title: online ? "online" : "offline",
      });
      item.dataset.user = userId;
      return item;
    });
    byId("people").replaceChildren(...people);
  }

  #renderTyping() {
    const names = [...this.typing].filter((id) => id !== this.me).sort();
    byId("typing").textContent =
      names.length === 0 ? "" : `${names.join(" and ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  #setParticipants(participants: Participant[]) {
    this.participants.clear();
    for (const participant of participants) this.participants.set(participant.userId, { ...participant });
  }

  /** Takes messages in from any source; of two copies of one seq the later version stays. */
  #add(messages: Message[]) {
    for (const message of messages) {
      const known = this.messages.get(message.seq);
      if (known && versionOf(known) > versionOf(message)) continue;
      if (known && versionOf(known) !== versionOf(message)) this.#rendered.delete(message.seq);
      this.messages.set(message.seq, message);
    }
  }
}

function setComposerEnabled(enabled: boolean) {
  for (const control of byId("composer").querySelectorAll<HTMLInputElement | HTMLButtonElement>("input, button")) {
    control.disabled = !enabled;
  }
}

/** Why an unsent message failed, in the reader's terms where the server's message is generic. */
function failureText(entry: OutboxItem): string {
  if (entry.error?.code === "not_found") return "you are no longer in this conversation.";
  return entry.error?.message ?? "refused by the server.";
}

function setTick(item: HTMLLIElement, status: TickStatus) {
  let tick = item.querySelector<HTMLElement>(".tick");
  if (!tick) {
    tick = element("span", { className: "tick" });
    item.querySelector(".meta")?.append(tick);
  }
  if (tick.dataset.status === status) return;
  tick.dataset.status = status;
  tick.textContent = TICKS[status].mark;
  tick.title = TICKS[status].label;
  tick.setAttribute("aria-label", TICKS[status].label);
}

let view: ConversationView | undefined;

/** Opens a conversation, or none (""): on a phone that is the list, on a wide screen the list and a hint. */
function openConversation(id: string) {
  if (view?.id === id) return;
  view?.dispose();
  view = undefined;
  conversationErrors.clearAll();
  byId("chat-view").dataset.pane = id ? "chat" : "list";
  byId("conversation").hidden = !id;
  byId("empty").hidden = !!id;
  byId("messages").replaceChildren();
  byId("typing").textContent = "";
  byId("people").replaceChildren();
  byId("conversation-title").textContent = "";
  byId("older").hidden = true;
  byId("new-below").hidden = true;
  setComposerEnabled(true);
  if (id && session) {
    sidebarErrors.clear("open");
    const opened = new ConversationView(id, session.userId, () => {
      if (view !== opened) return;
      sidebarErrors.set("open", "No such conversation, or you are not in it.");
      location.hash = "";
    });
    view = opened;
    opened.render("bottom");
    // On a phone the keyboard would cover the conversation the moment it opens.
    if (!narrow.matches) byId("draft").focus();
  }
  showStatus();
  renderList();
}

const hashId = () => decodeURIComponent(location.hash.slice(1));

// ---- Wiring -------------------------------------------------------------------------------------------

function enter(signedIn: Session) {
  session = signedIn;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(signedIn));
  signInErrors.clearAll();
  byId("sign-in-view").hidden = true;
  byId("chat-view").hidden = false;
  byId("me").hidden = false;
  byId("me").textContent = signedIn.userId;
  byId("sign-out").hidden = false;
  listCurrent = false;
  void loadList();
  openInbox();
  openConversation(hashId());
}

function leave() {
  view?.dispose();
  view = undefined;
  session = undefined;
  inbox?.close();
  inbox = undefined;
  inboxTotals = undefined;
  conversations = [];
  listCurrent = false;
  heldDuringLoad = undefined;
  loadingList = undefined;
  renderList();
  sessionStorage.removeItem(SESSION_KEY);
  conversationErrors.clearAll();
  sidebarErrors.clearAll();
  showStatus();
  history.replaceState(null, "", location.pathname);
  byId("chat-view").hidden = true;
  byId("sign-in-view").hidden = false;
  byId("me").hidden = true;
  byId("sign-out").hidden = true;
  byId("name").focus();
}

byId("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = byId<HTMLInputElement>("name").value.trim();
  if (!USER_ID.test(name)) return signInErrors.set("input", "Use 1 to 128 letters, digits and . _ : @ - only.");
  signInErrors.clearAll();
  try {
    enter(await devToken(name));
  } catch (err) {
    signInErrors.set("input", reasonOf(err));
  }
});
byId("name").addEventListener("input", () => signInErrors.clearAll());

byId("sign-out").addEventListener("click", leave);

byId("new-conversation").addEventListener("submit", async (event) => {
  event.preventDefault();
  const me = session?.userId;
  const withInput = byId<HTMLInputElement>("new-with");
  const titleInput = byId<HTMLInputElement>("new-title");
  const ids = [...new Set(withInput.value.split(/[\s,]+/).filter((id) => id && id !== me))];
  const title = titleInput.value.trim();
  if (ids.length === 0 || !ids.every((id) => USER_ID.test(id))) {
    return sidebarErrors.set("create", "Name one or more other people, separated by commas.");
  }
  sidebarErrors.clear("create");
  try {
    // One person and no title: the pair's direct conversation, made once and found again after.
    const conversation = await client.createConversation(
      ids.length === 1 && !title
        ? { participantIds: ids, direct: true }
        : { participantIds: ids, title: title || undefined },
    );
    withInput.value = "";
    titleInput.value = "";
    // In the list at once; the inbox says so too, a moment later (merged by rev).
    conversations = mergeConversation(conversations, conversation, me);
    location.hash = encodeURIComponent(conversation.id);
    renderList();
  } catch (err) {
    sidebarErrors.set("create", `Could not start it: ${reasonOf(err)}`);
  }
});
for (const input of ["new-with", "new-title"]) {
  byId(input).addEventListener("input", () => sidebarErrors.clear("create"));
}

const draft = byId<HTMLInputElement>("draft");
draft.addEventListener("input", () => {
  if (draft.value.trim()) view?.socket.typing();
  else view?.socket.stopTyping();
});
byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = draft.value;
  if (!content.trim() || !view) return;
  draft.value = "";
  view.send(content);
});

// Retry and Discard of an unsent message: one listener for every message the list will ever hold.
byId("messages").addEventListener("click", (event) => {
  const button = (event.target as Element).closest<HTMLButtonElement>("button[data-action]");
  const localId = button?.closest<HTMLElement>("li[data-local-id]")?.dataset.localId;
  if (!button || !localId || !view) return;
  if (button.dataset.action === "retry") view.retry(localId);
  else view.discard(localId);
});

byId("older").addEventListener("click", () => void view?.loadOlder());
byId("scroller").addEventListener("scroll", () => view?.scrolled(), { passive: true });
byId("new-below").addEventListener("click", () => {
  const scroller = byId("scroller");
  scroller.scrollTop = scroller.scrollHeight;
});
byId("back").addEventListener("click", () => {
  location.hash = "";
});
window.addEventListener("hashchange", () => {
  if (session) openConversation(hashId());
});
document.addEventListener("visibilitychange", () => {
  view?.markSeen();
  renderList();
});
// Both sockets drop their connection when the browser goes offline and reconnect when it is back (the SDK
// does it); the header says which it is.
window.addEventListener("offline", showStatus);
window.addEventListener("online", showStatus);

const saved = loadSession();
if (saved) enter(saved);
else byId("name").focus();
