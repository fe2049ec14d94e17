// One open conversation as a screen shows it: its messages in seq order (the newest page by REST, older
// pages on demand, new ones live), what the user wrote that is not stored yet (the socket's outbox), who is
// online and typing, and every participant's read and delivered markers. A store in the shape of React's
// useSyncExternalStore (`subscribe`, `getSnapshot`), usable without React.

import { retrying } from "./backoff.js";
import { type OutboxItem, tokenSubject } from "./outbox.js";
import { asChatApiError, ChatApiError, type ChatClient, type Message, type Participant } from "./rest.js";
import { ConversationSocket, type ConversationSocketOptions, type SocketStatus } from "./socket.js";
import { SnapshotStore } from "./store.js";

export interface Markers {
  lastReadSeq: number;
  lastDeliveredSeq: number;
}

/** A stored message as its sender sees it (`sending` is an outbox entry, not a message). */
export type MessageStatus = "sent" | "delivered" | "read";

export interface LiveConversationSnapshot {
  readonly conversationId: string;
  /** The signed-in user, once known (from the options, the token, or the socket's `ready`). */
  readonly userId: string | undefined;
  /** Stored messages, ascending by seq, with their edits and deletes. */
  readonly messages: readonly Message[];
  /** Written and not stored yet (`queued`, `sending`) or refused for good (`failed`), oldest first. */
  readonly pending: readonly OutboxItem[];
  readonly status: SocketStatus;
  /** The newest page of history is in. */
  readonly loaded: boolean;
  /** There are messages before the oldest one loaded (`loadOlder`). */
  readonly hasOlder: boolean;
  readonly loadingOlder: boolean;
  readonly participants: readonly Participant[];
  /** Every participant's markers by user id, moved by receipts and by their own messages. */
  readonly markers: Readonly<Record<string, Markers>>;
  /** Users with a socket open on this conversation (the user too, once connected). */
  readonly online: readonly string[];
  /** The other users typing now. */
  readonly typing: readonly string[];
  /** The last failure: a REST load, a refused frame, or the end (removed from the conversation). */
  readonly error: ChatApiError | null;
}

export interface LiveConversationOptions extends Omit<ConversationSocketOptions, "since"> {
  /** Messages per history page (1 to 100). Default 30. */
  pageSize?: number;
}

/**
 * The status of a stored message for the participants other than its sender: `read` once every one of them
 * read up to it, else `delivered` once it reached every one of them, else `sent` (also when it has nobody
 * else to reach).
 */
export function messageStatus(
  message: Pick<Message, "seq" | "senderId">,
  participants: readonly Participant[],
  markers: Readonly<Record<string, Markers>>,
): MessageStatus {
  const others = participants.filter((p) => p.userId !== message.senderId);
  if (others.length === 0) return "sent";
  const of = (p: Participant) => markers[p.userId] ?? p;
  if (others.every((p) => of(p).lastReadSeq >= message.seq)) return "read";
  if (others.every((p) => of(p).lastDeliveredSeq >= message.seq)) return "delivered";
  return "sent";
}

const NOTHING: readonly never[] = [];
const NO_MARKERS: Readonly<Record<string, Markers>> = {};

/** Before anything is loaded (also what the React hook shows before its store is made). */
export function emptyConversation(conversationId: string): LiveConversationSnapshot {
  return {
    conversationId,
    userId: undefined,
    messages: NOTHING,
    pending: NOTHING,
    status: "connecting",
    loaded: false,
    hasOlder: false,
    loadingOlder: false,
    participants: NOTHING,
    markers: NO_MARKERS,
    online: NOTHING,
    typing: NOTHING,
    error: null,
  };
}

/** Of two copies of one message, the later state: a delete, else the later edit. */
function newer(current: Message, incoming: Message): Message {
  if (current.deletedAt !== null) return current;
  if (incoming.deletedAt !== null) return incoming;
  return (incoming.editedAt ?? "") > (current.editedAt ?? "") ? incoming : current;
}

/** `list` and `incoming` as one list ascending by seq, each seq once. */
function mergeBySeq(list: readonly Message[], incoming: readonly Message[]): Message[] {
  const bySeq = new Map(list.map((m) => [m.seq, m]));
  for (const message of incoming) {
    const current = bySeq.get(message.seq);
    bySeq.set(message.seq, current ? newer(current, message) : message);
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

const raise = (markers: Markers | undefined, to: Markers): Markers => ({
  lastReadSeq: Math.max(markers?.lastReadSeq ?? 0, to.lastReadSeq),
  lastDeliveredSeq: Math.max(markers?.lastDeliveredSeq ?? 0, to.lastDeliveredSeq),
});

const without = (list: readonly string[], userId: string) =>
  list.includes(userId) ? list.filter((id) => id !== userId) : list;
const withUser = (list: readonly string[], userId: string) => (list.includes(userId) ? list : [...list, userId]);

/**
 * A conversation, live. It loads the newest page of history and opens the conversation's socket at once;
 * the socket's first `ready` says which seq live messages start after, and whatever lies between that and
 * the page (sent while both were on their way) is paged in, so every message is in once. Messages come in
 * seq order from every source, and an edit or a delete replaces its message. What `send` is given shows in
 * `pending` until it is stored, then in `messages`, in the same change of the snapshot.
 */
export class LiveConversation extends SnapshotStore<LiveConversationSnapshot> {
  readonly #client: ChatClient;
  readonly #socket: ConversationSocket;
  readonly #pageSize: number;
  readonly #backoff: { initialMs: number; maxMs: number };
  /** The outbox as the socket last told it; `pending` is it without what is already among the messages. */
  #outbox: readonly OutboxItem[] = [];
  /**
   * Entries that left the outbox because they were stored, until their message is among the messages: the
   * socket drops an entry when its ack comes, and gives the message after it (at once, or once the messages
   * before it are in), so without these a sent message would vanish for a moment between the two.
   */
  readonly #leaving = new Map<string, OutboxItem>();
  /** Entries the user discarded: they leave `pending` at once. */
  readonly #discarded = new Set<string>();
  /** Where live messages start (the first `ready`'s lastSeq), and the newest seq of the first page. */
  #liveAfter: number | undefined;
  #firstPageNewest: number | undefined;
  #gapChecked = false;
  /** The highest read marker asked for; sent when the socket is open. */
  #wantRead = 0;
  #closed = false;
  #wakeRetry: (() => void) | undefined;

  constructor(client: ChatClient, conversationId: string, options: LiveConversationOptions = {}) {
    const { pageSize = 30, ...socketOptions } = options;
    super({ ...emptyConversation(conversationId), userId: options.userId });
    this.#client = client;
    this.#pageSize = pageSize;
    this.#backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    if (options.userId === undefined) {
      void client.token().then(
        (token) => this.#setUser(tokenSubject(token)),
        () => {},
      );
    }
    const socket = new ConversationSocket(client, conversationId, socketOptions);
    this.#socket = socket;
    this.#listen(socket);
    void this.#firstPage();
  }

  get #id(): string {
    return this.getSnapshot().conversationId;
  }

  // ---- Actions --------------------------------------------------------------------------------------------

  /**
   * Sends a message: it is in `pending` at once, and in `messages` once stored. Resolves with the stored
   * message; a refusal for good rejects and leaves it `failed` in `pending` (the rejection needs no handler).
   */
  send(content: string, localId?: string): Promise<Message> {
    this.#socket.stopTyping();
    const stored = this.#socket.send(content, localId);
    stored.catch(() => {});
    return stored;
  }

  retry(localId: string): boolean {
    return this.#socket.retry(localId);
  }

  discard(localId: string): boolean {
    this.#discarded.add(localId);
    const discarded = this.#socket.discard(localId);
    this.#discarded.delete(localId);
    return discarded;
  }

  /** Call on every keystroke of the draft: the others are told at most every 3 s. */
  typing(): void {
    this.#socket.typing();
  }

  stopTyping(): void {
    this.#socket.stopTyping();
  }

  /** Moves the user's read marker to `seq` (only ever forward); sent now, or as soon as the socket is open. */
  markRead(seq: number): void {
    const { userId, markers } = this.getSnapshot();
    const own = userId === undefined ? 0 : (markers[userId]?.lastReadSeq ?? 0);
    if (seq <= Math.max(own, this.#wantRead)) return;
    this.#wantRead = seq;
    this.#flushRead();
  }

  /** Loads the page before the oldest message loaded; resolves when it is in (or failed: see `error`). */
  async loadOlder(): Promise<void> {
    const { hasOlder, loadingOlder, messages } = this.getSnapshot();
    const oldest = messages[0];
    if (!hasOlder || loadingOlder || !oldest || this.#closed) return;
    this.update({ loadingOlder: true });
    try {
      const page = await this.#client.history(this.#id, { before: oldest.seq, limit: this.#pageSize });
      if (this.#closed) return;
      this.#addMessages(page.messages, { hasOlder: page.hasMore });
    } catch (err) {
      if (!this.#closed) this.update({ error: asChatApiError(err) });
    } finally {
      if (!this.#closed) this.update({ loadingOlder: false });
    }
  }

  /** Closes the socket (unsent messages stay in its outbox's storage); no listener is told anything more. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeRetry?.();
    this.#socket.close();
    this.silence();
  }

  // ---- The socket -----------------------------------------------------------------------------------------

  #listen(socket: ConversationSocket): void {
    socket.on("status", (status) => {
      this.update({ status });
      if (status === "open") this.#flushRead();
    });
    socket.on("ready", (ready) => {
      this.#setUser(ready.userId);
      const markers: Record<string, Markers> = {};
      const current = this.getSnapshot().markers;
      for (const p of ready.participants) markers[p.userId] = raise(current[p.userId], p);
      this.update({
        participants: ready.participants,
        markers,
        online: ready.online,
        typing: ready.typing.filter((id) => id !== ready.userId),
      });
      if (this.#liveAfter === undefined) {
        this.#liveAfter = ready.lastSeq;
        void this.#fillGap();
      }
    });
    socket.on("message", (message) => {
      const { markers, typing } = this.getSnapshot();
      // A message from U also says U read and received up to it (API.md: no receipt is sent for that).
      const seq = { lastReadSeq: message.seq, lastDeliveredSeq: message.seq };
      this.#addMessages([message], {
        markers: { ...markers, [message.senderId]: raise(markers[message.senderId], seq) },
        typing: without(typing, message.senderId),
      });
    });
    socket.on("updated", (message) => {
      // Only in place: an edit of a message older than the pages loaded would leave a hole before it.
      const { messages } = this.getSnapshot();
      if (messages.some((m) => m.seq === message.seq)) this.update({ messages: mergeBySeq(messages, [message]) });
    });
    socket.on("outbox", ({ entries }) => {
      const still = new Set(entries.map((e) => e.localId));
      for (const entry of this.#outbox) {
        if (!still.has(entry.localId) && !this.#discarded.has(entry.localId)) {
          this.#leaving.set(entry.localId, { ...entry, state: "sending" });
        }
      }
      this.#outbox = entries;
      this.#derivePending();
    });
    socket.on("typing", ({ userId, typing }) => {
      if (userId === this.getSnapshot().userId) return;
      const list = this.getSnapshot().typing;
      this.update({ typing: typing ? withUser(list, userId) : without(list, userId) });
    });
    socket.on("presence", ({ userId, online }) => {
      const list = this.getSnapshot().online;
      this.update({ online: online ? withUser(list, userId) : without(list, userId) });
    });
    socket.on("receipt", ({ userId, lastReadSeq, lastDeliveredSeq }) => {
      const { markers } = this.getSnapshot();
      this.update({ markers: { ...markers, [userId]: raise(markers[userId], { lastReadSeq, lastDeliveredSeq }) } });
    });
    socket.on("participants", (participants) => {
      const current = this.getSnapshot().markers;
      const markers: Record<string, Markers> = {};
      for (const p of participants) markers[p.userId] = raise(current[p.userId], p);
      this.update({ participants, markers });
    });
    socket.on("error", ({ code, message }) =>
      this.update({ error: new ChatApiError(0, code as ChatApiError["code"], message) }),
    );
    socket.on("closed", ({ code, reason }) => {
      if (code === 4403) this.update({ error: new ChatApiError(404, "not_found", reason) });
    });
  }

  #setUser(userId: string | undefined): void {
    if (userId === undefined || this.getSnapshot().userId !== undefined) return;
    this.update({ userId, typing: without(this.getSnapshot().typing, userId) });
    this.#derivePending();
  }

  #flushRead(): void {
    if (this.#wantRead === 0 || this.#closed) return;
    const { userId, markers } = this.getSnapshot();
    const own = userId === undefined ? 0 : (markers[userId]?.lastReadSeq ?? 0);
    if (this.#wantRead <= own) return;
    if (!this.#socket.markRead(this.#wantRead) || userId === undefined) return;
    // Moved here at once; the server's receipt goes to the others (and the user's other devices).
    const seq = this.#wantRead;
    this.update({
      markers: { ...markers, [userId]: raise(markers[userId], { lastReadSeq: seq, lastDeliveredSeq: seq }) },
    });
  }

  /** Messages in, with `patch`, as one change: a sent message moves from `pending` to `messages` at once. */
  #addMessages(incoming: readonly Message[], patch: Partial<LiveConversationSnapshot> = {}): void {
    const messages = mergeBySeq(this.getSnapshot().messages, incoming);
    this.update({ ...patch, messages, pending: this.#pendingWith(messages) });
  }

  #derivePending(): void {
    this.update({ pending: this.#pendingWith(this.getSnapshot().messages) });
  }

  /**
   * `pending` next to `messages`: the entries on their way out, then the outbox, without what is among the
   * messages already (a history page can show a message stored before the socket says so). The same array
   * when nothing changed.
   */
  #pendingWith(messages: readonly Message[]): readonly OutboxItem[] {
    const { userId, pending: current } = this.getSnapshot();
    const stored = new Set(messages.filter((m) => m.senderId === userId).map((m) => m.localId));
    for (const localId of this.#leaving.keys()) if (stored.has(localId)) this.#leaving.delete(localId);
    const pending = [...this.#leaving.values(), ...this.#outbox].filter((e) => !stored.has(e.localId));
    const same = pending.length === current.length && pending.every((e, i) => e === current[i]);
    return same ? current : pending;
  }

  // ---- History --------------------------------------------------------------------------------------------

  /** The newest page, tried again with backoff while it can work. */
  async #firstPage(): Promise<void> {
    try {
      const page = await retrying(() => this.#client.history(this.#id, { limit: this.#pageSize }), {
        backoff: this.#backoff,
        stopped: () => this.#closed,
        onWait: (wake) => {
          this.#wakeRetry = wake;
        },
        retry: (err) => {
          if (this.#closed) return false;
          const error = asChatApiError(err);
          this.update({ error });
          return error.retryable;
        },
      });
      if (this.#closed) return;
      this.#firstPageNewest = page.messages[0]?.seq ?? 0;
      this.#addMessages(page.messages, { hasOlder: page.hasMore, loaded: true, error: null });
      await this.#fillGap();
    } catch {
      // Why is in `error`.
    }
  }

  /**
   * Once both the first page and the first `ready` are in: the messages after the page and up to where live
   * ones start were sent while the two were on their way; they are paged in (`after`, oldest first).
   */
  async #fillGap(): Promise<void> {
    const to = this.#liveAfter;
    let after = this.#firstPageNewest;
    if (to === undefined || after === undefined || this.#gapChecked) return;
    this.#gapChecked = true;
    try {
      while (after < to && !this.#closed) {
        const page = await this.#client.history(this.#id, { after, limit: 100 });
        if (this.#closed) return;
        this.#addMessages(page.messages);
        const last = page.messages.at(-1)?.seq;
        if (last === undefined || !page.hasMore) return;
        after = last;
      }
    } catch (err) {
      // Left as it is: an app sees the error, and those messages again on its next load.
      if (!this.#closed) this.update({ error: asChatApiError(err) });
    }
  }
}
