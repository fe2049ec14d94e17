// The signed-in user's conversation list, kept live: REST pages of `GET /v1/conversations` and the frames of
// the inbox socket, combined by the merge rule of API.md ("The inbox"), with the unread totals. A store in
// the shape of React's useSyncExternalStore (`subscribe`, `getSnapshot`), usable without React.

import { retrying } from "./backoff.js";
import {
  InboxSocket,
  type InboxSocketOptions,
  type InboxTotals,
  mergeConversation,
  mergeConversations,
  removeConversation,
} from "./inbox.js";
import { asChatApiError, ChatApiError, type ChatClient, type Conversation } from "./rest.js";
import type { SocketStatus } from "./socket.js";
import { SnapshotStore } from "./store.js";

export interface ConversationListSnapshot extends InboxTotals {
  /** Most recent activity first, as the REST list orders them. */
  readonly conversations: readonly Conversation[];
  /** The inbox version of the last frame applied to the list; undefined before the first. */
  readonly version: number | undefined;
  /** The inbox socket's. */
  readonly status: SocketStatus;
  /** The first REST page is in. */
  readonly loaded: boolean;
  /** A REST load is under way. */
  readonly loading: boolean;
  /** The REST list has more pages than loaded (`loadMore`). */
  readonly hasMore: boolean;
  /** Why the last REST load failed, or the inbox stopped; null once a load works again. */
  readonly error: ChatApiError | null;
}

export interface ConversationListOptions extends Omit<InboxSocketOptions, "since"> {
  /** The signed-in user (the token's `sub`), whose own read marker the merge keeps; by default from the inbox. */
  userId?: string;
  /** Conversations per REST page (1 to 100). Default 50. */
  pageSize?: number;
  /**
   * The inbox version to catch up from on the first connection. The default, 0, replays the latest state of
   * every conversation the inbox holds: the REST list lags acknowledgements by up to 1 s, and so nothing
   * that changed just before connecting is missed. `null`: live frames only (a list of one page, at the
   * price of that window).
   */
  since?: number | null;
}

/** A frame (or its totals) waiting for the REST load under way, with the inbox version it brought. */
type Held =
  | { kind: "totals"; totals: InboxTotals; version: number | undefined }
  | { kind: "conversation"; conversation: Conversation; totals: InboxTotals; version: number | undefined }
  | { kind: "removed"; conversationId: string; totals: InboxTotals; version: number | undefined };

/** `first` and `reload` load from the first page (as many pages as were loaded), `more` the next one. */
type LoadKind = "first" | "reload" | "more";

/** Before anything is loaded (also what the React hook shows before its store is made). */
export const EMPTY_LIST: ConversationListSnapshot = {
  conversations: [],
  unreadTotal: 0,
  unreadConversations: 0,
  version: undefined,
  status: "connecting",
  loaded: false,
  loading: false,
  hasMore: false,
  error: null,
};

const totalsOf = ({ unreadTotal, unreadConversations }: InboxTotals): InboxTotals => ({
  unreadTotal,
  unreadConversations,
});

/**
 * The conversation list, live. It loads the first REST page and opens the inbox socket at once. Frames that
 * arrive while a REST page is loading are held and applied after it, in order: a page read before a change
 * cannot undo it (a removal, above all, which no `rev` orders). The inbox socket reconnects by itself and
 * resumes from the last version it saw, which every held frame reaches the list at; after a `resync` the
 * list is loaded again. Unread totals are the inbox's, over all the user's conversations, loaded or not.
 */
export class ConversationList extends SnapshotStore<ConversationListSnapshot> {
  readonly #client: ChatClient;
  readonly #inbox: InboxSocket;
  readonly #pageSize: number;
  readonly #backoff: { initialMs: number; maxMs: number };
  #userId: string | undefined;
  /** Frames held while a load is under way; undefined when none is. */
  #held: Held[] | undefined;
  /** Conversations the user left: a REST page read before D1 knew (it may lag while D1 is away) shows none. */
  readonly #removed = new Set<string>();
  #cursor: string | null = null;
  #pages = 0;
  #running: Promise<void> | undefined;
  #queued: { kind: LoadKind; promise: Promise<void> } | undefined;
  #closed = false;
  #wakeRetry: (() => void) | undefined;

  constructor(client: ChatClient, options: ConversationListOptions = {}) {
    super(EMPTY_LIST);
    const { userId, pageSize = 50, since = 0, ...socketOptions } = options;
    this.#client = client;
    this.#userId = userId;
    this.#pageSize = pageSize;
    this.#backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    void this.#load("first");
    const inbox = new InboxSocket(client, { ...socketOptions, ...(since === null ? {} : { since }) });
    this.#inbox = inbox;
    inbox.on("status", (status) => this.update({ status }));
    inbox.on("ready", (ready) => {
      this.#userId ??= ready.userId;
      this.#take({ kind: "totals", totals: totalsOf(ready), version: inbox.version });
      // A first load that failed for good (or was given up when the network went) is tried again here.
      if (!this.getSnapshot().loaded && !this.#running) void this.#load("first");
    });
    inbox.on("conversation", ({ conversation, ...totals }) =>
      this.#take({ kind: "conversation", conversation, totals: totalsOf(totals), version: inbox.version }),
    );
    inbox.on("removed", ({ conversationId, ...totals }) =>
      this.#take({ kind: "removed", conversationId, totals: totalsOf(totals), version: inbox.version }),
    );
    inbox.on("resync", () => {
      // What changed after the version asked for is lost, so is what the list knows of removals.
      this.#removed.clear();
      void this.#load("reload");
    });
    inbox.on("closed", ({ code, reason }) => {
      if (code !== 1000) this.update({ error: new ChatApiError(401, "unauthenticated", reason) });
    });
  }

  /** Loads the next REST page; resolves when it is in (or failed: see `error`). */
  loadMore(): Promise<void> {
    if (!this.getSnapshot().hasMore) return Promise.resolve();
    return this.#load("more");
  }

  /** Loads the list again from its first page (as many pages as are loaded); what the inbox says meanwhile is kept. */
  reload(): Promise<void> {
    return this.#load("reload");
  }

  /** Closes the inbox socket; the snapshot stays as it is, and no listener is told anything more. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeRetry?.();
    this.#inbox.close();
    this.silence();
  }

  // ---- Frames ---------------------------------------------------------------------------------------------

  #take(item: Held): void {
    if (this.#held) this.#held.push(item);
    else this.#apply([item]);
  }

  /** Applies frames in order, as one change of the snapshot (with `extra`). */
  #apply(items: readonly Held[], extra: Partial<ConversationListSnapshot> = {}): void {
    let conversations = this.getSnapshot().conversations;
    let last: Held | undefined;
    for (const item of items) {
      last = item;
      if (item.kind === "conversation") {
        this.#removed.delete(item.conversation.id);
        conversations = mergeConversation(conversations, item.conversation, this.#userId);
      } else if (item.kind === "removed") {
        this.#removed.add(item.conversationId);
        conversations = removeConversation(conversations, item.conversationId);
      }
    }
    this.update({ ...extra, conversations, ...(last ? { ...last.totals, version: last.version } : {}) });
  }

  // ---- REST loads -----------------------------------------------------------------------------------------

  /** One load at a time; a load asked for while one runs goes after it (a reload takes over a queued `more`). */
  #load(kind: LoadKind): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#queued) {
      if (kind !== "more") this.#queued.kind = "reload";
      return this.#queued.promise;
    }
    if (this.#running) {
      const queued: { kind: LoadKind; promise: Promise<void> } = {
        kind,
        promise: this.#running.then(() => {
          this.#queued = undefined;
          return this.#start(queued.kind);
        }),
      };
      this.#queued = queued;
      return queued.promise;
    }
    return this.#start(kind);
  }

  #start(kind: LoadKind): Promise<void> {
    const running = this.#run(kind).finally(() => {
      if (this.#running === running) this.#running = undefined;
    });
    this.#running = running;
    return running;
  }

  async #run(kind: LoadKind): Promise<void> {
    const held: Held[] = [];
    this.#held = held;
    this.update({ loading: true });
    try {
      await retrying(
        () => (kind === "more" ? this.#nextPage() : this.#firstPages(kind === "first" ? 1 : Math.max(1, this.#pages))),
        {
          backoff: this.#backoff,
          stopped: () => this.#closed,
          onWait: (wake) => {
            this.#wakeRetry = wake;
          },
          retry: (err) => {
            if (this.#closed) return false;
            const error = asChatApiError(err);
            this.update({ error });
            // A page the user asked for is theirs to ask again; the list itself is retried while it can work.
            return kind !== "more" && error.retryable;
          },
        },
      );
      if (!this.#closed) this.update({ error: null, loaded: true });
    } catch {
      // Why is in `error`.
    } finally {
      // What the inbox said during the load goes on top of the page, in the order it came.
      if (this.#held === held) this.#held = undefined;
      if (!this.#closed) this.#apply(held, { loading: false });
    }
  }

  /** The first `count` pages, in place of the list: what they lack may have been left while frames were lost. */
  async #firstPages(count: number): Promise<void> {
    const pages: Conversation[][] = [];
    let cursor: string | null = null;
    do {
      const page = await this.#client.listConversations({
        limit: this.#pageSize,
        ...(cursor === null ? {} : { cursor }),
      });
      pages.push(page.conversations);
      cursor = page.nextCursor;
    } while (cursor !== null && pages.length < count);
    if (this.#closed) return;
    const fresh = pages.flat().filter((c) => !this.#removed.has(c.id));
    const ids = new Set(fresh.map((c) => c.id));
    // What the list already had of the same conversations is merged in: a page read from D1 a moment behind
    // does not move a newer state (or one's own read marker) back.
    const known = this.getSnapshot().conversations.filter((c) => ids.has(c.id));
    this.#cursor = cursor;
    this.#pages = pages.length;
    this.update({ conversations: mergeConversations(fresh, known, this.#userId), hasMore: cursor !== null });
  }

  async #nextPage(): Promise<void> {
    const cursor = this.#cursor;
    if (cursor === null) return;
    const page = await this.#client.listConversations({ limit: this.#pageSize, cursor });
    if (this.#closed) return;
    const fresh = page.conversations.filter((c) => !this.#removed.has(c.id));
    this.#cursor = page.nextCursor;
    this.#pages++;
    this.update({
      conversations: mergeConversations(this.getSnapshot().conversations, fresh, this.#userId),
      hasMore: page.nextCursor !== null,
    });
  }
}
