import type { ServerFrame } from "../schemas";
import { reconnectDelayMs, wakeableSleep } from "./backoff";
import { ChatApiError, type ChatClient, type Message, type Participant } from "./rest";

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
  /** An edit or a delete. */
  updated: Message;
  typing: Frame<"typing">;
  presence: Frame<"presence">;
  receipt: Frame<"receipt">;
  participants: Participant[];
  status: SocketStatus;
  /** A refused frame that will not be retried (a send's promise rejects too). */
  error: Frame<"error">;
  /** The socket was closed for good: removed from the conversation (4403) or closed by `close()`. */
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
}

interface OutboxEntry {
  localId: string;
  content: string;
  resolve: (message: Message) => void;
  reject: (error: ChatApiError) => void;
  retryTimer?: ReturnType<typeof setTimeout>;
}

const TYPING_REFRESH_MS = 3_000;

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
 * resumes from the last seq it delivered (so nothing is missed or repeated), pages REST after a `resync`,
 * and resends unacknowledged messages after a reconnect (the server's idempotency makes that safe).
 */
export class ConversationSocket {
  /** The highest seq delivered to `message` listeners. */
  lastSeq: number;
  status: SocketStatus = "connecting";

  readonly #client: ChatClient;
  readonly #conversationId: string;
  readonly #connect: SocketConnector;
  readonly #options: Required<Pick<ConversationSocketOptions, "pingIntervalMs" | "pongTimeoutMs" | "backoff">>;
  readonly #listeners = new Map<keyof ConversationSocketEvents, Set<(value: never) => void>>();
  readonly #outbox = new Map<string, OutboxEntry>();
  #ws: WebSocketLike | undefined;
  #stopped = false;
  #typingSentAt = 0;
  /** Live messages that arrive while a resync pages history; delivered after it. */
  #held: Message[] | undefined;
  /** The signed-in user, from `ready`. */
  #userId: string | undefined;
  /** Ends the current backoff wait early. */
  #wake: (() => void) | undefined;
  #reconnectNow = false;

  constructor(client: ChatClient, conversationId: string, options: ConversationSocketOptions = {}) {
    this.#client = client;
    this.#conversationId = conversationId;
    this.#connect = options.connect ?? browserConnector;
    this.lastSeq = options.since ?? -1;
    this.#options = {
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      backoff: options.backoff ?? { initialMs: 500, maxMs: 30_000 },
    };
    this.#watchNetwork();
    void this.#run();
  }

  /** In a browser: drop the socket when the device goes offline, and reconnect at once when it is back. */
  #watchNetwork(): void {
    const page = globalThis as { document?: unknown; addEventListener?: (type: string, listener: () => void) => void };
    if (!page.document || !page.addEventListener) return;
    page.addEventListener("offline", () => this.#ws?.close(4000, "offline"));
    page.addEventListener("online", () => {
      if (!this.#stopped) this.reconnect();
    });
  }

  on<K extends keyof ConversationSocketEvents>(event: K, listener: (value: ConversationSocketEvents[K]) => void) {
    const set = this.#listeners.get(event) ?? new Set();
    this.#listeners.set(event, set);
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /**
   * Sends a message; resolves with it once the server has stored it. Until then it is kept in the outbox and
   * sent again after every reconnect, under the same localId, so it is stored exactly once.
   */
  send(content: string, localId: string = newLocalId()): Promise<Message> {
    return new Promise((resolve, reject) => {
      if (this.#stopped) {
        return reject(new ChatApiError(0, "network", "This socket is closed; open a new one to send"));
      }
      const entry: OutboxEntry = { localId, content, resolve, reject };
      this.#outbox.set(localId, entry);
      this.#transmit(entry);
    });
  }

  /** Messages sent but not acknowledged yet, oldest first (to show as "sending"). */
  pending(): { localId: string; content: string }[] {
    return [...this.#outbox.values()].map(({ localId, content }) => ({ localId, content }));
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
    this.#reconnectNow = true;
    this.#wake?.();
    this.#ws?.close(4000, "reconnecting");
  }

  /** Closes for good; unacknowledged sends reject. */
  close(): void {
    this.#stopped = true;
    this.#ws?.close(1000, "closed by the client");
    for (const entry of this.#outbox.values()) {
      clearTimeout(entry.retryTimer);
      entry.reject(new ChatApiError(0, "network", "The socket was closed before the message was stored"));
    }
    this.#outbox.clear();
    this.#setStatus("closed");
    this.#emit("closed", { code: 1000, reason: "closed by the client" });
  }

  // ---- Connection lifecycle ---------------------------------------------------------------------------

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#stopped) {
      this.#setStatus(attempt === 0 && this.lastSeq < 0 ? "connecting" : "reconnecting");
      let closeCode = 1006;
      try {
        const since = this.lastSeq >= 0 ? this.lastSeq : undefined;
        const ws = await this.#connect(await this.#client.socketUrl(this.#conversationId, since));
        closeCode = await this.#session(ws, () => {
          attempt = 0;
        });
      } catch (err) {
        // Not a participant (any more), or a bad token: retrying cannot help.
        if (err instanceof ChatApiError && (err.code === "not_found" || err.code === "unauthenticated")) {
          return this.#end(4403, err.message);
        }
      }
      if (this.#stopped) return;
      if (closeCode === 4403) return this.#end(4403, "removed from the conversation");
      this.#setStatus("reconnecting");
      if (this.#reconnectNow) {
        this.#reconnectNow = false;
        attempt = 0;
        continue;
      }
      const delay = reconnectDelayMs(this.#options.backoff, attempt++, closeCode);
      await wakeableSleep(delay, (wake) => {
        this.#wake = wake;
      });
      this.#wake = undefined;
    }
  }

  /** One connection, from open to close; resolves with the close code. */
  #session(ws: WebSocketLike, onReady: () => void): Promise<number> {
    return new Promise((resolve) => {
      this.#ws = ws;
      let pongDeadline: ReturnType<typeof setTimeout> | undefined;
      const heard = () => clearTimeout(pongDeadline);
      const pinger = setInterval(() => {
        ws.send("ping");
        pongDeadline ??= setTimeout(() => ws.close(4000, "no answer to ping"), this.#options.pongTimeoutMs);
      }, this.#options.pingIntervalMs);
      // A socket that has carried no frame from its client does not finish a close the server starts (seen
      // with workerd under wrangler dev: the client stays CLOSING). One `ping` at once avoids that; the
      // runtime answers it without waking the conversation.
      ws.send("ping");

      ws.addEventListener("message", (event) => {
        heard();
        pongDeadline = undefined;
        if (typeof event.data !== "string" || event.data === "pong") return;
        const frame = JSON.parse(event.data) as ServerFrame;
        if (frame.type === "ready") {
          onReady();
          this.#setStatus("open");
          for (const entry of this.#outbox.values()) this.#transmit(entry);
        }
        void this.#onFrame(frame);
      });
      ws.addEventListener("close", (event) => {
        clearInterval(pinger);
        heard();
        if (this.#ws === ws) this.#ws = undefined;
        resolve(event.code);
      });
    });
  }

  async #onFrame(frame: ServerFrame): Promise<void> {
    switch (frame.type) {
      case "ready": {
        const { type: _, ...ready } = frame;
        this.#userId = ready.userId;
        if (this.lastSeq < 0) this.lastSeq = ready.lastSeq;
        return this.#emit("ready", ready);
      }
      case "message":
        return this.#deliver(frame.message);
      case "ack": {
        const entry = this.#outbox.get(frame.localId);
        this.#outbox.delete(frame.localId);
        clearTimeout(entry?.retryTimer);
        this.#deliver(frame.message);
        return entry?.resolve(frame.message);
      }
      case "resync":
        return this.#resync(frame.fromSeq);
      case "message_updated":
        return this.#emit("updated", frame.message);
      case "participants":
        return this.#emit("participants", frame.participants);
      case "error":
        return this.#refused(frame);
      default: {
        const { type, ...rest } = frame;
        return this.#emit(type, rest as never);
      }
    }
  }

  /** Too many missed for a replay: page them from REST, holding live messages until the pages are in. */
  async #resync(fromSeq: number): Promise<void> {
    this.#held ??= [];
    try {
      let after = Math.max(fromSeq, this.lastSeq);
      for (;;) {
        const page = await this.#client.history(this.#conversationId, { after, limit: 100 });
        for (const message of page.messages) this.#deliver(message, true);
        after = page.messages.at(-1)?.seq ?? after;
        if (!page.hasMore) break;
      }
    } finally {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const message of held) this.#deliver(message);
    }
  }

  #deliver(message: Message, fromHistory = false): void {
    if (this.#held && !fromHistory) {
      this.#held.push(message);
      return;
    }
    // One's own message can come back as a message rather than an ack (the ack was lost with a connection):
    // it is stored, so it leaves the outbox.
    const own = message.senderId === this.#userId && message.localId ? this.#outbox.get(message.localId) : undefined;
    if (own) {
      this.#outbox.delete(own.localId);
      clearTimeout(own.retryTimer);
      own.resolve(message);
    }
    if (message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    this.#emit("message", message);
  }

  #refused(frame: Extract<ServerFrame, { type: "error" }>): void {
    const { type: _, ...error } = frame;
    const entry = frame.ref === undefined ? undefined : this.#outbox.get(frame.ref);
    if (entry && (frame.code === "unavailable" || frame.code === "rate_limited")) {
      // Nothing was stored: the same localId again, a little later.
      entry.retryTimer = setTimeout(() => this.#transmit(entry), frame.retryAfterMs ?? 1_000);
      return;
    }
    if (entry) {
      this.#outbox.delete(entry.localId);
      entry.reject(new ChatApiError(0, frame.code as ChatApiError["code"], frame.message));
    }
    this.#emit("error", error);
  }

  #transmit(entry: OutboxEntry): void {
    this.#frame({ type: "send", localId: entry.localId, content: entry.content });
  }

  /** Sends a frame if the socket is open; false when it is not (the outbox resends sends after reconnecting). */
  #frame(frame: object): boolean {
    if (!this.#ws || this.status !== "open") return false;
    try {
      this.#ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  #end(code: number, reason: string): void {
    this.#stopped = true;
    for (const entry of this.#outbox.values()) {
      entry.reject(new ChatApiError(0, "not_found", "No longer a participant of this conversation"));
    }
    this.#outbox.clear();
    this.#setStatus("closed");
    this.#emit("closed", { code, reason });
  }

  #setStatus(status: SocketStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.#emit("status", status);
  }

  #emit<K extends keyof ConversationSocketEvents>(event: K, value: ConversationSocketEvents[K]): void {
    for (const listener of this.#listeners.get(event) ?? []) (listener as (v: typeof value) => void)(value);
  }
}
