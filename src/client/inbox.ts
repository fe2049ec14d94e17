import { Reconnects } from "./backoff.js";
import type { InboxFrame } from "./contract.js";
import { Listeners, watchNetwork } from "./events.js";
import { keepAlive } from "./keepalive.js";
import { ChatApiError, type ChatClient, type Conversation } from "./rest.js";
import { browserConnector, type SocketConnector, type SocketStatus, type WebSocketLike } from "./socket.js";

// The user's inbox: one socket that keeps the whole conversation list live (API.md, "The inbox"), and the
// pure merge rule that lets an app combine it with REST pages of the list in any order.

type Frame<K extends InboxFrame["type"]> = Omit<Extract<InboxFrame, { type: K }>, "type">;

/** The user's unread messages over all their conversations, and how many conversations have some. */
export interface InboxTotals {
  unreadTotal: number;
  unreadConversations: number;
}

export interface InboxSocketEvents {
  /** Connected: the inbox's version and totals now. A catch-up (after `since`) follows it, then live frames. */
  ready: Frame<"inbox_ready">;
  /** A conversation of the user changed (or was created or joined): merge it with `mergeConversation`. */
  conversation: Frame<"conversation">;
  /** The user left or was removed: drop it with `removeConversation`. */
  removed: Frame<"conversation_removed">;
  /** The changes after the version asked for are no longer kept: reload the list by REST. */
  resync: Frame<"resync">;
  /** The totals carried by every `ready`, `conversation` and `removed`. */
  totals: InboxTotals;
  status: SocketStatus;
  /** The server refused something the socket sent (it sends only `ping`, so this is a bug somewhere). */
  error: Frame<"error">;
  /** Closed for good: by `close()`, or because the user cannot be authenticated any more. */
  closed: { code: number; reason: string };
}

export interface InboxSocketOptions {
  /**
   * The last inbox version the app already has. The first connection then replays the latest state of every
   * conversation that changed after it (`0`: of every conversation the inbox holds). Without it, the first
   * connection has live frames only; every reconnect resumes from the last version seen either way.
   */
  since?: number;
  connect?: SocketConnector;
  /** `ping` this often; a socket that answers nothing within `pongTimeoutMs` is taken for dead. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** Reconnect delays: exponential from `initialMs` to `maxMs`, each with up to 50 % random jitter. */
  backoff?: { initialMs: number; maxMs: number };
}

/**
 * The signed-in user's inbox socket: every change of the conversation list, over one connection whatever the
 * number of conversations. It reconnects with backoff and jitter and resumes from the last version it saw,
 * so nothing is missed; when the inbox can no longer replay from there it emits `resync`.
 */
export class InboxSocket {
  /** The highest inbox version seen (from `inbox_ready` or a change); undefined before the first. */
  version: number | undefined;
  status: SocketStatus = "connecting";
  /** The latest totals, once connected. */
  totals: InboxTotals | undefined;

  readonly #client: ChatClient;
  readonly #connect: SocketConnector;
  readonly #options: Required<Pick<InboxSocketOptions, "pingIntervalMs" | "pongTimeoutMs" | "backoff">>;
  readonly #listeners = new Listeners<InboxSocketEvents>();
  #ws: WebSocketLike | undefined;
  #stopped = false;
  /** The version `inbox_ready` gave on the current connection: where live frames start after a resync. */
  #readyVersion = 0;
  readonly #unwatch: () => void;
  readonly #reconnects: Reconnects;

  constructor(client: ChatClient, options: InboxSocketOptions = {}) {
    this.#client = client;
    this.#connect = options.connect ?? browserConnector;
    this.version = options.since;
    this.#options = {
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      backoff: options.backoff ?? { initialMs: 500, maxMs: 30_000 },
    };
    this.#reconnects = new Reconnects(this.#options.backoff);
    this.#unwatch = watchNetwork(
      () => this.#ws?.close(4000, "offline"),
      () => {
        if (!this.#stopped) this.reconnect();
      },
    );
    void this.#run();
  }

  on<K extends keyof InboxSocketEvents>(event: K, listener: (value: InboxSocketEvents[K]) => void) {
    return this.#listeners.on(event, listener);
  }

  /** Drops the current connection and connects again now, without waiting out the backoff. */
  reconnect(): void {
    this.#reconnects.now();
    this.#ws?.close(4000, "reconnecting");
  }

  /** Closes for good. */
  close(): void {
    if (this.#stopped) return;
    this.#end(1000, "closed by the client");
    this.#reconnects.wake();
    this.#ws?.close(1000, "closed by the client");
  }

  // ---- Connection lifecycle ---------------------------------------------------------------------------

  async #run(): Promise<void> {
    while (!this.#stopped) {
      this.#setStatus(this.#reconnects.attempt === 0 && this.totals === undefined ? "connecting" : "reconnecting");
      let closeCode = 1006;
      let refused: ChatApiError | undefined;
      try {
        const ws = await this.#connect(await this.#client.inboxSocketUrl(this.version));
        if (this.#stopped) {
          ws.close(1000, "closed by the client");
          return;
        }
        closeCode = await this.#session(ws, () => this.#reconnects.succeeded());
      } catch (err) {
        // A token the service refuses: retrying cannot help.
        if (err instanceof ChatApiError && err.code === "unauthenticated") refused = err;
      }
      if (this.#stopped) return;
      if (refused) return this.#end(4401, refused.message);
      this.#setStatus("reconnecting");
      await this.#reconnects.wait(closeCode);
    }
  }

  /** One connection, from open to close; resolves with the close code. */
  #session(ws: WebSocketLike, onReady: () => void): Promise<number> {
    return new Promise((resolve) => {
      this.#ws = ws;
      const alive = keepAlive(ws, this.#options);

      ws.addEventListener("message", (event) => {
        alive.heard();
        if (typeof event.data !== "string" || event.data === "pong") return;
        let frame: InboxFrame;
        try {
          frame = JSON.parse(event.data) as InboxFrame;
        } catch {
          return;
        }
        if (frame.type === "inbox_ready") {
          onReady();
          this.#setStatus("open");
        }
        this.#onFrame(frame);
      });
      ws.addEventListener("close", (event) => {
        alive.stop();
        if (this.#ws === ws) this.#ws = undefined;
        resolve(event.code);
      });
    });
  }

  #onFrame(frame: InboxFrame): void {
    switch (frame.type) {
      case "inbox_ready": {
        const { type: _, ...ready } = frame;
        this.#readyVersion = ready.version;
        // Without a version to resume from, live frames start here; with one, the catch-up follows.
        if (this.version === undefined) this.version = ready.version;
        this.#emit("ready", ready);
        this.#setTotals(ready);
        break;
      }
      case "conversation": {
        const { type: _, ...change } = frame;
        this.#advance(change.version);
        this.#emit("conversation", change);
        this.#setTotals(change);
        break;
      }
      case "conversation_removed": {
        const { type: _, ...removal } = frame;
        this.#advance(removal.version);
        this.#emit("removed", removal);
        this.#setTotals(removal);
        break;
      }
      case "resync":
        // What came after `fromVersion` is lost; the app reloads the list, and live frames go on from the
        // version this connection started at.
        this.version = this.#readyVersion;
        this.#emit("resync", { fromVersion: frame.fromVersion });
        break;
      case "error": {
        const { type: _, ...error } = frame;
        this.#emit("error", error);
        break;
      }
    }
  }

  #advance(version: number): void {
    this.version = Math.max(this.version ?? 0, version);
  }

  #setTotals({ unreadTotal, unreadConversations }: InboxTotals): void {
    this.totals = { unreadTotal, unreadConversations };
    this.#emit("totals", this.totals);
  }

  #end(code: number, reason: string): void {
    this.#stopped = true;
    this.#unwatch();
    this.#setStatus("closed");
    this.#emit("closed", { code, reason });
  }

  #setStatus(status: SocketStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.#emit("status", status);
  }

  #emit<K extends keyof InboxSocketEvents>(event: K, value: InboxSocketEvents[K]): void {
    this.#listeners.emit(event, value);
  }
}

// ---- The merge rule -------------------------------------------------------------------------------------

/**
 * When a conversation last had activity, as the REST list orders it: its `updatedAt`, which a new message or a
 * join moves, or its last message's time if that is later. Milliseconds since the epoch.
 */
export function activityOf(conversation: Conversation): number {
  const updated = Date.parse(conversation.updatedAt);
  const last = conversation.lastMessage ? Date.parse(conversation.lastMessage.createdAt) : Number.NEGATIVE_INFINITY;
  return Math.max(updated, last);
}

/** Most recent activity first, as `GET /v1/conversations` returns them (ties: the greater id first). */
export function byActivity(a: Conversation, b: Conversation): number {
  return activityOf(b) - activityOf(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/**
 * The user's own read marker in a conversation as the user sees it: their participant entry when `userId` is
 * given, else what `unreadCount` implies (it is lastSeq − the user's lastReadSeq).
 */
function ownReadSeq(conversation: Conversation, userId: string | undefined): number {
  const own = userId === undefined ? undefined : conversation.participants.find((p) => p.userId === userId);
  return own?.lastReadSeq ?? conversation.lastSeq - conversation.unreadCount;
}

/**
 * Two states of one conversation, from REST or the inbox in any order, as one: the higher `rev` wins for what
 * all members share; the user's own `lastReadSeq` (and `lastDeliveredSeq`) only grow; `unreadCount` is
 * `lastSeq − lastReadSeq`. `userId` is the signed-in user, whose participant entry is kept in step.
 */
export function mergeStates(current: Conversation, incoming: Conversation, userId?: string): Conversation {
  const [winner, loser] = incoming.rev > current.rev ? [incoming, current] : [current, incoming];
  const readSeq = Math.min(winner.lastSeq, Math.max(ownReadSeq(winner, userId), ownReadSeq(loser, userId)));
  const unreadCount = Math.max(0, winner.lastSeq - readSeq);
  const loserOwn = userId === undefined ? undefined : loser.participants.find((p) => p.userId === userId);
  let participants = winner.participants;
  if (userId !== undefined) {
    participants = winner.participants.map((p) =>
      p.userId !== userId
        ? p
        : {
            ...p,
            lastReadSeq: Math.max(p.lastReadSeq, readSeq),
            lastDeliveredSeq: Math.max(p.lastDeliveredSeq, loserOwn?.lastDeliveredSeq ?? 0, readSeq),
          },
    );
  }
  return { ...winner, participants, unreadCount };
}

/**
 * The list with `conversation` merged in (by the rule of `mergeStates`) or added, ordered by most recent
 * activity like the REST list. Pure: returns a new array, and never changes the one given.
 */
export function mergeConversation(
  list: readonly Conversation[],
  conversation: Conversation,
  userId?: string,
): Conversation[] {
  const current = list.find((c) => c.id === conversation.id);
  const merged = current ? mergeStates(current, conversation, userId) : conversation;
  return [...list.filter((c) => c.id !== conversation.id), merged].sort(byActivity);
}

/** `mergeConversation` for many: e.g. a REST page merged into what the inbox already delivered. */
export function mergeConversations(
  list: readonly Conversation[],
  conversations: readonly Conversation[],
  userId?: string,
): Conversation[] {
  const byId = new Map(list.map((c) => [c.id, c]));
  for (const conversation of conversations) {
    const current = byId.get(conversation.id);
    byId.set(conversation.id, current ? mergeStates(current, conversation, userId) : conversation);
  }
  return [...byId.values()].sort(byActivity);
}

/** The list without the conversation the user left or was removed from. */
export function removeConversation(list: readonly Conversation[], conversationId: string): Conversation[] {
  return list.filter((c) => c.id !== conversationId);
}
