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

type TickStatus = "sending" | "sent" | "delivered" | "read";
const TICKS: Record<TickStatus, { mark: string; label: string }> = {
  sending: { mark: "sending…", label: "Sending" },
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

function flash(target: HTMLElement, text: string) {
  target.textContent = text;
  setTimeout(() => {
    if (target.textContent === text) target.textContent = "";
  }, 6_000);
}

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

function showStatus(status: SocketStatus | "idle") {
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
    // The open conversation is read as it is shown; its read marker reaches the inbox a moment later.
    const unread = isOpen && document.visibilityState === "visible" ? 0 : conversation.unreadCount;
    listUnread += unread;
    hiddenUnread += conversation.unreadCount - unread;
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

class ConversationView {
  readonly messages = new Map<number, Message>();
  readonly #rendered = new Map<number, HTMLLIElement>();
  readonly participants = new Map<string, Participant>();
  readonly online = new Set<string>();
  readonly typing = new Set<string>();
  socket: ConversationSocket | undefined;
  #title = "";
  #hasOlder = false;
  #markedRead = 0;
  #markSoon: ReturnType<typeof setTimeout> | undefined;
  #disposed = false;

  constructor(
    readonly id: string,
    readonly me: string,
  ) {}

  async start() {
    const [conversation, page] = await Promise.all([
      client.getConversation(this.id),
      client.history(this.id, { limit: PAGE_SIZE }),
    ]);
    if (this.#disposed) return;
    this.#title = nameOf(conversation, this.me);
    this.#setParticipants(conversation.participants);
    this.#add(page.messages);
    this.#hasOlder = page.hasMore;
    this.render("bottom");

    // Resume right after the newest message of the first page: the socket replays anything newer.
    const socket = new ConversationSocket(client, this.id, {
      since: page.messages[0]?.seq ?? 0,
      backoff: { initialMs: 500, maxMs: 5_000 },
    });
    this.socket = socket;
    socket.on("status", (status) => {
      showStatus(status);
      this.render("keep");
    });
    socket.on("ready", (ready) => {
      this.#setParticipants(ready.participants);
      this.online.clear();
      for (const userId of ready.online) this.online.add(userId);
      this.typing.clear();
      for (const userId of ready.typing) this.typing.add(userId);
      this.render("keep");
      this.markSeen();
    });
    socket.on("message", (message) => {
      this.#add([message]);
      // Sending moves the sender's own markers to their message (API.md), without a receipt of its own: a
      // reply sent before its sender's page said "read" still shows everything before it read.
      const sender = this.participants.get(message.senderId);
      if (sender) {
        sender.lastReadSeq = Math.max(sender.lastReadSeq, message.seq);
        sender.lastDeliveredSeq = Math.max(sender.lastDeliveredSeq, message.seq);
      }
      this.typing.delete(message.senderId);
      this.render(message.senderId === this.me ? "bottom" : "keep");
      this.markSeen();
    });
    socket.on("updated", (message) => {
      if (!this.messages.has(message.seq)) return;
      this.#rendered.delete(message.seq);
      this.#add([message]);
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
    socket.on("error", (error) => flash(byId("send-error"), `Refused: ${error.message}`));
    socket.on("closed", ({ code }) => {
      if (code === 4403) flash(byId("send-error"), "You are no longer in this conversation.");
    });
  }

  dispose() {
    this.#disposed = true;
    clearTimeout(this.#markSoon);
    this.socket?.close();
  }

  send(content: string) {
    const socket = this.socket;
    if (!socket) return;
    socket.stopTyping();
    const stored = socket.send(content);
    this.render("bottom");
    stored.then(
      () => this.render("keep"),
      (err: unknown) => {
        flash(byId("send-error"), `Not sent: ${err instanceof Error ? err.message : String(err)}`);
        this.render("keep");
      },
    );
  }

  async loadOlder() {
    const oldest = Math.min(...this.messages.keys());
    const button = byId<HTMLButtonElement>("older");
    button.disabled = true;
    try {
      const page = await client.history(this.id, { before: oldest, limit: PAGE_SIZE });
      if (this.#disposed) return;
      this.#add(page.messages);
      this.#hasOlder = page.hasMore;
      this.render("anchor-bottom");
    } catch (err) {
      flash(byId("send-error"), `Could not load older messages: ${(err as Error).message}`);
    } finally {
      button.disabled = false;
    }
  }

  /** Marks what is shown as read, while the page is visible: a `read` frame, coalesced to a few per second
   * (the server's bucket of read markers and typing refills 10 per second). */
  markSeen() {
    clearTimeout(this.#markSoon);
    this.#markSoon = setTimeout(() => {
      const socket = this.socket;
      if (document.visibilityState !== "visible" || socket?.status !== "open") return;
      const newest = Math.max(0, ...this.messages.keys());
      const mine = this.participants.get(this.me)?.lastReadSeq ?? 0;
      if (newest <= Math.max(mine, this.#markedRead)) return;
      socket.markRead(newest);
      this.#markedRead = newest;
      renderList();
    }, 200);
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
    for (const pending of this.socket?.pending() ?? []) {
      const item = this.#messageItem({ content: pending.content, senderId: this.me });
      item.classList.add("pending");
      item.dataset.localId = pending.localId;
      setTick(item, "sending");
      items.push(item);
    }
    byId("messages").replaceChildren(...items);
    byId("older").hidden = !this.#hasOlder;
    byId("conversation-title").textContent = this.#title;
    this.#renderPeople();
    this.#renderTyping();
    if (scroll === "bottom" || (scroll === "keep" && fromBottom < 60)) {
      scroller.scrollTop = scroller.scrollHeight;
    } else if (scroll === "anchor-bottom") {
      scroller.scrollTop = scroller.scrollHeight - scroller.clientHeight - fromBottom;
    }
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

  #add(messages: Message[]) {
    for (const message of messages) this.messages.set(message.seq, message);
  }
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

async function openConversation(id: string) {
  if (view?.id === id) return;
  view?.dispose();
  view = undefined;
  showStatus("idle");
  byId("conversation").hidden = !id;
  byId("empty").hidden = !!id;
  byId("messages").replaceChildren();
  byId("typing").textContent = "";
  byId("people").replaceChildren();
  byId("conversation-title").textContent = "";
  byId("older").hidden = true;
  renderList();
  if (!id || !session) return;
  const opened = new ConversationView(id, session.userId);
  view = opened;
  renderList();
  try {
    await opened.start();
    byId("draft").focus();
  } catch (err) {
    if (view !== opened) return;
    const notFound = err instanceof ChatApiError && err.code === "not_found";
    flash(byId("new-error"), notFound ? "No such conversation, or you are not in it." : (err as Error).message);
    location.hash = "";
  }
}

const hashId = () => decodeURIComponent(location.hash.slice(1));

// ---- Wiring -------------------------------------------------------------------------------------------

function enter(signedIn: Session) {
  session = signedIn;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(signedIn));
  byId("sign-in-view").hidden = true;
  byId("chat-view").hidden = false;
  byId("me").hidden = false;
  byId("me").textContent = signedIn.userId;
  byId("sign-out").hidden = false;
  listCurrent = false;
  void loadList();
  openInbox();
  void openConversation(hashId());
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
  showStatus("idle");
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
  const error = byId("sign-in-error");
  if (!USER_ID.test(name)) return flash(error, "Use 1 to 128 letters, digits and . _ : @ - only.");
  try {
    enter(await devToken(name));
    error.textContent = "";
  } catch (err) {
    flash(error, (err as Error).message);
  }
});

byId("sign-out").addEventListener("click", leave);

byId("new-conversation").addEventListener("submit", async (event) => {
  event.preventDefault();
  const me = session?.userId;
  const withInput = byId<HTMLInputElement>("new-with");
  const titleInput = byId<HTMLInputElement>("new-title");
  const ids = [...new Set(withInput.value.split(/[\s,]+/).filter((id) => id && id !== me))];
  const title = titleInput.value.trim();
  const error = byId("new-error");
  if (ids.length === 0 || !ids.every((id) => USER_ID.test(id))) {
    return flash(error, "Name one or more other people, separated by commas.");
  }
  try {
    // One person and no title: the pair's direct conversation, made once and found again after.
    const conversation = await client.createConversation(
      ids.length === 1 && !title
        ? { participantIds: ids, direct: true }
        : { participantIds: ids, title: title || undefined },
    );
    withInput.value = "";
    titleInput.value = "";
    location.hash = encodeURIComponent(conversation.id);
    // In the list at once; the inbox says so too, a moment later (merged by rev).
    conversations = mergeConversation(conversations, conversation, me);
    renderList();
  } catch (err) {
    flash(error, (err as Error).message);
  }
});

const draft = byId<HTMLInputElement>("draft");
draft.addEventListener("input", () => {
  if (draft.value.trim()) view?.socket?.typing();
  else view?.socket?.stopTyping();
});
byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = draft.value;
  if (!content.trim() || !view) return;
  draft.value = "";
  view.send(content);
});

byId("older").addEventListener("click", () => void view?.loadOlder());
window.addEventListener("hashchange", () => {
  if (session) void openConversation(hashId());
});
document.addEventListener("visibilitychange", () => {
  view?.markSeen();
  renderList();
});
// The SDK drops the socket when the browser goes offline and reconnects when it is back.
window.addEventListener("offline", () => {
  if (view?.socket) showStatus(view.socket.status);
});
// The inbox socket does the same, and catches up from the last version it saw.
window.addEventListener("online", () => {
  if (view?.socket) showStatus(view.socket.status);
});

const saved = loadSession();
if (saved) enter(saved);
else byId("name").focus();
