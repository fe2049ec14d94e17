import { Reconnects, reconnectDelayMs, wakeableSleep } from "./backoff.js";
import type { ClientFrame, ServerFrame } from "./contract.js";
import { Listeners, watchNetwork } from "./events.js";
import { keepAlive } from "./keepalive.js";
import {
  defaultOutboxStorage,
  Outbox,
  type OutboxItem,
  type OutboxSnapshot,
  type OutboxStorage,
  outboxKey,
  tokenSubject,
} from "./outbox.js";
import { ChatApiError, type ChatClient, type Message, type Participant } from "./rest.js";

/** The part of a WebSocket the conversation socket uses: the browser's, Node's, and workerd's all fit. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
}

/** Opens a socket to `url` and resolves once it is open. */
export type SocketConnector = (url: string) => Promise<WebSocketLike>;

export type SocketStatus = "connecting" | "open" | "reconnecting" | "closed";

type Frame<K extends ServerFrame["type"]> = Omit<Extract<ServerFrame, { type: K }>, "type">;

export interface ConversationSocketEvents {
  ready: Frame<"ready">;
  /** Each message once, in seq order, whether it came live, by replay, by resync paging, or as your own ack. */
  message: Message;
  /** An edit or a delete (of a message already given to `message`: one not given yet is updated after it). */
  updated: Message;
  typing: Frame<"typing">;
  presence: Frame<"presence">;
  receipt: Frame<"receipt">;
  participants: Participant[];
  status: SocketStatus;
  /** The unsent messages changed: each with its state; show the `failed` ones with a retry and a discard. */
  outbox: OutboxSnapshot;
  /** A refused frame that will not be retried (for a send: its promise rejects, its entry is `failed`). */
  error: Frame<"error">;
  /** The socket was closed for good: removed from the conversation (4403) or closed by `close()`. Last event. */
  closed: { code: number; reason: string };
}

export interface ConversationSocketOptions {
  /** The last seq the app already has; the first connection replays what came after it. */
  since?: number;
  connect?: SocketConnector;
  /** `ping` this often; a socket that answers nothing within `pongTimeoutMs` is taken for dead. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** Reconnect delays: exponential from `initialMs` to `maxMs`, each with up to 50 % random jitter. */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * Where unsent messages are kept, by service, user and conversation: a later socket of the same conversation
   * with the same storage (after a reload, or a switch of conversation) sends them, in order. Default:
   * localStorage when there is one, else memory shared by the page's sockets. One socket per conversation and
   * storage at a time: two would overwrite each other's saved copy.
   */
  storage?: OutboxStorage;
  /** The signed-in user, for the storage key; by default the `sub` of the client's token. */
  userId?: string;
}

const TYPING_REFRESH_MS = 3_000;
/** The contract's localId: a frame with another one is refused without saying which send it was. */
const LOCAL_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Refusals after which the same send may be taken: the outbox pauses, then sends it again. */
const TRANSIENT_REFUSALS = new Set(["rate_limited", "unavailable"]);
/** A rate_limited frame without `retryAfterMs` (an older server): wait this long. */
const DEFAULT_RETRY_AFTER_MS = 1_000;

interface Waiter {
  promise: Promise<Message>;
  resolve: (message: Message) => void;
  reject: (error: ChatApiError) => void;
}

/** The browser's WebSocket, resolved once open. */
export const browserConnector: SocketConnector = (url) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.addEventListener("open", () => resolve(ws as WebSocketLike));
    ws.addEventListener("error", () => reject(new ChatApiError(0, "network", "The socket could not open")));
  });

export const newLocalId = () => crypto.randomUUID();

/**
 * A conversation's live connection that survives network trouble: it reconnects with backoff and jitter,
 * resumes after the last seq it delivered (so nothing is missed or repeated), pages REST after a `resync`, and
 * keeps an outbox of unsent messages, saved so that a reload loses none, sent one at a time in the order they
 * were written and again after every reconnect (the server's idempotency makes that safe).
 *
 * One send is in flight at a time. The server decides on each frame by itself (a rate_limited or unavailable
 * refusal, then the next frame taken, because the bucket refilled in between or the next commit worked), so a
 * send pipelined behind a refused one could be stored before it: waiting for each answer is what keeps the
 * stored order the written order. It costs a round trip per message, which past the first 20 is less than the
 * send rate allows anyway (5 per second): on a refusal the outbox pauses for its `retryAfterMs` and goes on
 * from the refused message.
 */
export class ConversationSocket {
  /** The highest seq delivered to `message` listeners: every seq up to it was delivered, in order. */
  lastSeq: number;
  status: SocketStatus = "connecting";

  readonly #client: ChatClient;
  readonly #conversationId: string;
  readonly #connect: SocketConnector;
  readonly #options: Required<Pick<ConversationSocketOptions, "pingIntervalMs" | "pongTimeoutMs" | "backoff">>;
  readonly #listeners = new Listeners<ConversationSocketEvents>();
  readonly #outbox: Outbox;
  /** One promise per localId in the outbox, for the `send` calls that asked for it. */
  readonly #waiters = new Map<string, Waiter>();
  /** Messages past `lastSeq + 1`, held until the ones before them are in. */
  readonly #early = new Map<number, Message>();
  /** Edits and deletes of messages not delivered yet, given right after them. */
  readonly #earlyUpdates = new Map<number, Message>();
  readonly #unwatch: () => void;
  #ws: WebSocketLike | undefined;
  /** Set by `close()` or a removal: nothing connects, sends or pages any more. */
  #stopped = false;
  /** Stopped by a removal: its outbox stays open for `discard` alone (nothing else can change it any more). */
  #removed = false;
  /** `closed` was emitted: no event follows it. */
  #silent = false;
  #everOpen = false;
  #typingSentAt = 0;
  /** The signed-in user, from the options or `ready`. */
  #userId: string | undefined;
  /** The send on the wire, and the socket it went out on: its answer comes on that socket or not at all. */
  #inFlight: { localId: string; ws: WebSocketLike } | undefined;
  /** The outbox waits out a refusal; sends resume when it fires. */
  #pause: ReturnType<typeof setTimeout> | undefined;
  /** `unavailable` refusals in a row, for their backoff. */
  #unavailable = 0;
  /** A resync is paging history. */
  #paging = false;
  /** Ends a resync page's wait for its retry early. */
  #wakePaging: (() => void) | undefined;
  /** The reconnect backoff, and its wait. */
  readonly #reconnects: Reconnects;

  constructor(client: ChatClient, conversationId: string, options: ConversationSocketOptions = {}) {
    this.#client = client;
    this.#conversationId = conversationId;
    this.#connect = options.connect ?? browserConnector;
    this.lastSeq = options.since ?? -1;
    this.#userId = options.userId;
    this.#options = {
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      backoff: options.backoff ?? { initialMs: 500, maxMs: 30_000 },
    };
    this.#reconnects = new Reconnects(this.#options.backoff);
    this.#outbox = new Outbox(options.storage ?? defaultOutboxStorage(), this.#storageKey(options.userId), () =>
      this.#emit("outbox", this.#outbox.snapshot()),
    );
    void this.#outbox.loaded.then(() => {
      for (const localId of this.#outbox.dropped) {
        this.#settle(localId, new ChatApiError(0, "idempotency_conflict", "This localId was saved with other content"));
      }
      this.#pump();
    });
    this.#unwatch = watchNetwork(
      () => this.#ws?.close(4000, "offline"),
      () => {
        if (!this.#stopped) this.reconnect();
      },
    );
    void this.#run();
  }

  async #storageKey(userId: string | undefined): Promise<string> {
    const user = userId ?? tokenSubject(await this.#client.token());
    return outboxKey(this.#client.baseUrl, user, this.#conversationId);
  }

  on<K extends keyof ConversationSocketEvents>(event: K, listener: (value: ConversationSocketEvents[K]) => void) {
    return this.#listeners.on(event, listener);
  }

  /**
   * Sends a message; resolves with it once the server has stored it. Until then it is kept in the outbox (and
   * its saved copy), and sent after every reconnect under the same localId, so it is stored once.
   *
   * One promise per localId: while a message is in the outbox, `send` with its localId and the same content
   * returns the same promise (and sends nothing more); with other content it rejects (`idempotency_conflict`)
   * and leaves the entry as it was. For a `failed` entry, `send` with the same content is a `retry` with a new
   * promise. A localId outside `^[A-Za-z0-9_-]{1,64}$` rejects at once (`validation_failed`).
   */
  send(content: string, localId: string = newLocalId()): Promise<Message> {
    if (this.#stopped) {
      return Promise.reject(new ChatApiError(0, "network", "This socket is closed; open a new one to send"));
    }
    if (!LOCAL_ID.test(localId)) {
      return Promise.reject(new ChatApiError(0, "validation_failed", "A localId is 1 to 64 of A-Z a-z 0-9 _ -"));
    }
    const entry = this.#outbox.find(localId);
    if (entry && entry.content !== content) {
      return Promise.reject(new ChatApiError(0, "idempotency_conflict", "This localId is queued with other content"));
    }
    const promise = this.#waiterFor(localId);
    if (!entry) this.#outbox.add(localId, content);
    else if (entry.state === "failed") this.#outbox.mark(localId, "queued");
    this.#pump();
    return promise;
  }

  /** Messages sent but not stored yet, oldest first (to show as "sending"); `outbox()` has the failed too. */
  pending(): { localId: string; content: string }[] {
    return this.outbox()
      .filter((e) => e.state !== "failed")
      .map(({ localId, content }) => ({ localId, content }));
  }

  /** Every message of the outbox, oldest first, with its state (and, when failed, why). */
  outbox(): OutboxItem[] {
    return this.#outbox.snapshot().entries;
  }

  /** Sends a failed message again, in its place in the outbox; false when there is no failed one by that id. */
  retry(localId: string): boolean {
    if (this.#stopped || this.#outbox.find(localId)?.state !== "failed") return false;
    this.#outbox.mark(localId, "queued");
    this.#pump();
    return true;
  }

  /**
   * Drops a failed message from the outbox (and its saved copy); false when there is no failed one by that id.
   * Also after a removal, which leaves every unsent message failed for good: they must not stay saved for ever.
   */
  discard(localId: string): boolean {
    if ((this.#stopped && !this.#removed) || this.#outbox.find(localId)?.state !== "failed") return false;
    return this.#outbox.remove(localId);
  }

  /** Call on every keystroke: tells the others at most every 3 s; the server ends it 5 s after the last. */
  typing(): void {
    const now = Date.now();
    if (now - this.#typingSentAt < TYPING_REFRESH_MS) return;
    if (this.#frame({ type: "typing", typing: true })) this.#typingSentAt = now;
  }

  stopTyping(): void {
    if (this.#typingSentAt === 0) return;
    this.#typingSentAt = 0;
    this.#frame({ type: "typing", typing: false });
  }

  /** Moves the read marker; false when the socket is not open (then use ChatClient.markRead, or retry). */
  markRead(seq: number): boolean {
    return this.#frame({ type: "read", seq });
  }

  /** Drops the current connection and connects again now, without waiting out the backoff (e.g. when the
   * device comes back online); what was missed is replayed and the outbox resent as after any reconnect. */
  reconnect(): void {
    if (this.#stopped) return;
    this.#reconnects.now();
    this.#ws?.close(4000, "reconnecting");
  }

  /**
   * Closes for good, in every state: a connection still opening is closed as soon as it opens, and `closed` is
   * the last event. Unsent messages stay in the outbox's storage for the next socket of this conversation;
   * the promises of their `send` calls reject.
   */
  close(): void {
    if (this.#stopped) return;
    this.#stop();
    this.#ws?.close(1000, "closed by the client");
    // What it holds now is what the next socket of this conversation finds.
    this.#outbox.close();
    this.#rejectWaiters(
      new ChatApiError(0, "network", "The socket was closed before the message was stored; it stays in the outbox"),
    );
    this.#finish(1000, "closed by the client");
  }

  // ---- Connection lifecycle ---------------------------------------------------------------------------

  async #run(): Promise<void> {
    while (!this.#stopped) {
      this.#setStatus(this.#reconnects.attempt === 0 && !this.#everOpen ? "connecting" : "reconnecting");
      let closeCode = 1006;
      try {
        const since = this.lastSeq >= 0 ? this.lastSeq : undefined;
        const url = await this.#client.socketUrl(this.#conversationId, since);
        if (this.#stopped) return;
        const ws = await this.#connect(url);
        if (this.#stopped) {
          // close() came while it was opening.
          ws.close(1000, "closed by the client");
          return;
        }
        closeCode = await this.#session(ws, () => this.#reconnects.succeeded());
      } catch (err) {
        // Not a participant (any more), or a bad token: retrying cannot help.
        if (
          !this.#stopped &&
          err instanceof ChatApiError &&
          (err.code === "not_found" || err.code === "unauthenticated")
        ) {
          return this.#end(4403, err.message, err.code);
        }
      }
      if (this.#stopped) return;
      if (closeCode === 4403) return this.#end(4403, "removed from the conversation", "not_found");
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
        if (this.#stopped || typeof event.data !== "string" || event.data === "pong") return;
        let frame: ServerFrame;
        try {
          frame = JSON.parse(event.data) as ServerFrame;
        } catch {
          return;
        }
        if (frame.type === "ready") onReady();
        this.#onFrame(frame, ws);
      });
      ws.addEventListener("close", (event) => {
        alive.stop();
        if (this.#ws === ws) this.#ws = undefined;
        if (this.#inFlight?.ws === ws) {
          const { localId } = this.#inFlight;
          this.#inFlight = undefined;
          // The server closes on a frame over its limit (1009): only a send is that large, and sending it
          // again would close every connection the same way.
          if (event.code === 1009)
            this.#failed(localId, "payload_too_large", event.reason || "The message is too large");
          // Its answer is lost with the connection: it is sent again (same localId) after the reconnect.
          else this.#outbox.mark(localId, "queued");
        }
        resolve(event.code);
      });
    });
  }

  #onFrame(frame: ServerFrame, ws: WebSocketLike): void {
    switch (frame.type) {
      case "ready":
        this.#ready(frame);
        break;
      case "message":
        this.#deliver(frame.message);
        break;
      case "ack":
        this.#stored(frame.localId, frame.message);
        this.#deliver(frame.message);
        break;
      case "resync":
        void this.#page(frame.fromSeq);
        break;
      case "message_updated":
        this.#updated(frame.message);
        break;
      case "participants":
        this.#emit("participants", frame.participants);
        break;
      case "error":
        this.#refused(frame, ws);
        break;
      default: {
        const { type, ...rest } = frame;
        this.#emit(type, rest as never);
      }
    }
  }

  #ready(frame: Extract<ServerFrame, { type: "ready" }>): void {
    const { type: _, ...ready } = frame;
    this.#userId = ready.userId;
    // Without a seq to resume from, live messages start here.
    if (this.lastSeq < 0) this.lastSeq = ready.lastSeq;
    this.#everOpen = true;
    this.#setStatus("open");
    this.#emit("ready", ready);
    this.#flush();
    this.#pump();
  }

  /**
   * Too many missed for a replay: page them from REST after the last seq delivered. Live messages that arrive
   * meanwhile wait in `#early` (they are past the gap); a failed page is tried again with backoff. One paging
   * at a time: a running one goes on to the end of the history.
   */
  async #page(fromSeq: number): Promise<void> {
    if (this.#paging) return;
    this.#paging = true;
    try {
      let after = this.lastSeq >= 0 ? this.lastSeq : fromSeq;
      let failures = 0;
      while (!this.#stopped) {
        let page: { messages: Message[]; hasMore: boolean };
        try {
          page = await this.#client.history(this.#conversationId, { after, limit: 100 });
        } catch (err) {
          // Not a participant any more, or a token refused: the socket hears it too, and stops.
          if (err instanceof ChatApiError && (err.code === "not_found" || err.code === "unauthenticated")) return;
          await wakeableSleep(reconnectDelayMs(this.#options.backoff, failures++, 0), (wake) => {
            this.#wakePaging = wake;
          });
          continue;
        }
        failures = 0;
        for (const message of page.messages) this.#deliver(message);
        after = page.messages.at(-1)?.seq ?? after;
        if (!page.hasMore) return;
      }
    } catch (err) {
      // A listener threw: do not leave an unhandled rejection behind; the next reconnect resumes from lastSeq.
      console.error("resync paging failed", err);
    } finally {
      this.#paging = false;
      this.#wakePaging = undefined;
    }
  }

  /** Takes a message in, from any source: given to `message` listeners once, when all before it are in. */
  #deliver(message: Message): void {
    // One's own message can come as a message rather than an ack (the ack was lost with a connection, or it
    // came in a replay or a page): it is stored, so it leaves the outbox.
    if (this.#isOwnUnacked(message) && message.localId !== null) this.#stored(message.localId, message);
    if (message.seq <= this.lastSeq) return;
    this.#early.set(message.seq, message);
    this.#flush();
  }

  /**
   * Whether `message` is one of the outbox's, stored: its localId, from this user, with the same content
   * (unless edited or deleted since). A message with that localId and other content was another one: this
   * entry is refused (idempotency_conflict) when it is sent. A failed entry stays until retried or discarded.
   */
  #isOwnUnacked(message: Message): boolean {
    if (message.senderId !== this.#userId || message.localId === null) return false;
    const entry = this.#outbox.find(message.localId);
    if (!entry || entry.state === "failed") return false;
    return entry.content === message.content || message.editedAt !== null || message.deletedAt !== null;
  }

  /** Gives every held message that is next in seq order. */
  #flush(): void {
    if (this.lastSeq < 0) return;
    for (const seq of this.#early.keys()) if (seq <= this.lastSeq) this.#early.delete(seq);
    for (let next = this.#early.get(this.lastSeq + 1); next; next = this.#early.get(this.lastSeq + 1)) {
      this.#early.delete(next.seq);
      this.lastSeq = next.seq;
      this.#emit("message", next);
      const update = this.#earlyUpdates.get(next.seq);
      this.#earlyUpdates.delete(next.seq);
      if (update) this.#emit("updated", update);
    }
  }

  #updated(message: Message): void {
    if (this.lastSeq >= 0 && message.seq <= this.lastSeq) this.#emit("updated", message);
    else this.#earlyUpdates.set(message.seq, message);
  }

  // ---- The outbox ---------------------------------------------------------------------------------------

  /** Sends the oldest queued message, when the socket is open, nothing is in flight and no refusal is waited out. */
  #pump(): void {
    if (this.#stopped || this.#inFlight || this.#pause !== undefined || !this.#outbox.isLoaded) return;
    const ws = this.#ws;
    const entry = this.#outbox.nextQueued();
    if (!ws || this.status !== "open" || !entry) return;
    this.#inFlight = { localId: entry.localId, ws };
    this.#outbox.mark(entry.localId, "sending");
    if (this.#frame({ type: "send", localId: entry.localId, content: entry.content })) return;
    // The socket is closing: the reconnect sends it.
    this.#inFlight = undefined;
    this.#outbox.mark(entry.localId, "queued");
  }

  /** The server has the message: out of the outbox, its promise resolved, the next one sent. */
  #stored(localId: string, message: Message): void {
    if (this.#inFlight?.localId === localId) {
      this.#inFlight = undefined;
      this.#unavailable = 0;
    }
    if (this.#outbox.remove(localId)) this.#settle(localId, message);
    this.#pump();
  }

  #refused(frame: Extract<ServerFrame, { type: "error" }>, ws: WebSocketLike): void {
    // Without a ref: a read marker or a typing frame refused.
    if (frame.ref === undefined) {
      const { type: _, ...error } = frame;
      this.#emit("error", error);
      return;
    }
    const inFlight = this.#inFlight;
    // A ref names a send. Not the one in flight: a late answer to a send already answered (a resend after a
    // reconnect of a message the replay showed stored), or to one sent again since; it changes nothing.
    if (inFlight?.localId !== frame.ref || inFlight.ws !== ws) return;
    this.#inFlight = undefined;
    if (TRANSIENT_REFUSALS.has(frame.code)) {
      // Nothing was stored: the whole outbox waits, then goes on from this one, in order.
      this.#outbox.mark(frame.ref, "queued");
      const wait =
        frame.code === "rate_limited"
          ? (frame.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS)
          : reconnectDelayMs(this.#options.backoff, this.#unavailable++, 0);
      this.#pauseOutbox(wait);
      return;
    }
    // Refused for good (validation_failed, idempotency_conflict, not_found…).
    this.#failed(frame.ref, frame.code, frame.message);
  }

  /** A send refused for good: kept as failed (to retry or discard), its promise rejected; the next one goes. */
  #failed(localId: string, code: string, message: string): void {
    this.#outbox.mark(localId, "failed", { code, message });
    this.#settle(localId, new ChatApiError(0, code as ChatApiError["code"], message));
    this.#emit("error", { code, message, ref: localId });
    this.#pump();
  }

  #pauseOutbox(ms: number): void {
    clearTimeout(this.#pause);
    this.#pause = setTimeout(() => {
      this.#pause = undefined;
      this.#pump();
    }, ms);
  }

  #waiterFor(localId: string): Promise<Message> {
    const existing = this.#waiters.get(localId);
    if (existing) return existing.promise;
    let resolve!: (message: Message) => void;
    let reject!: (error: ChatApiError) => void;
    const promise = new Promise<Message>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#waiters.set(localId, { promise, resolve, reject });
    return promise;
  }

  #settle(localId: string, outcome: Message | ChatApiError): void {
    const waiter = this.#waiters.get(localId);
    if (!waiter) return;
    this.#waiters.delete(localId);
    if (outcome instanceof ChatApiError) waiter.reject(outcome);
    else waiter.resolve(outcome);
  }

  #rejectWaiters(error: ChatApiError): void {
    for (const localId of [...this.#waiters.keys()]) this.#settle(localId, error);
  }

  /** Sends a frame if the socket is open; false when it is not (the outbox resends sends after reconnecting). */
  #frame(frame: ClientFrame): boolean {
    if (!this.#ws || this.status !== "open") return false;
    try {
      this.#ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- The end ------------------------------------------------------------------------------------------

  /** Removed from the conversation (or refused): what is unsent can no longer be sent by this user. */
  #end(code: number, reason: string, errorCode: "not_found" | "unauthenticated"): void {
    this.#stop();
    const error = new ChatApiError(0, errorCode, reason);
    if (errorCode === "not_found") {
      for (const entry of this.outbox()) {
        if (entry.state !== "failed") this.#outbox.mark(entry.localId, "failed", { code: errorCode, message: reason });
      }
    }
    // A refused token may be renewed: those stay queued for the next socket.
    this.#rejectWaiters(error);
    this.#removed = errorCode === "not_found";
    if (!this.#removed) this.#outbox.close();
    this.#finish(code, reason);
  }

  /** Stops every activity: no connection, send, page or timer goes on. */
  #stop(): void {
    this.#stopped = true;
    this.#unwatch();
    clearTimeout(this.#pause);
    this.#pause = undefined;
    this.#reconnects.wake();
    this.#wakePaging?.();
  }

  #finish(code: number, reason: string): void {
    this.#setStatus("closed");
    this.#emit("closed", { code, reason });
    this.#silent = true;
  }

  #setStatus(status: SocketStatus): void {
    if (this.status === status || this.#silent) return;
    this.status = status;
    this.#emit("status", status);
  }

  #emit<K extends keyof ConversationSocketEvents>(event: K, value: ConversationSocketEvents[K]): void {
    if (this.#silent) return;
    this.#listeners.emit(event, value);
  }
}
