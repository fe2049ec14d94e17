import { DurableObject } from "cloudflare:workers";
import { allConversationsOf } from "../db/conversations";
import { directory } from "../db/directory";
import { Buckets } from "../domain/buckets";
import { toSharedConversation } from "../domain/conversations";
import type { InboxChange } from "../domain/inbox";
import { catchUpPlan } from "../domain/inbox";
import { IDLE_SOCKET_MS } from "../domain/messages";
import { type Env, type Limits, readLimits } from "../env";
import { ApiError, errorJson } from "../errors";
import { closeSocket } from "../room/fanout";
import type { InboxFrame } from "../schemas";
import { issueTicket, redeemTicket } from "../storage/tickets";
import {
  applyChanges,
  changesSince,
  currentVersion,
  forgottenUpTo,
  isSeeded,
  markSeeded,
  migrate,
  unreadTotals,
} from "./store";

/** A user's conversations taken from the directory when their inbox is first used: at most 100 per page. */
const SEED_PAGES = 100;
/** While sockets are open, the inbox wakes this often to close those that went silent (no frame, no ping). */
const SWEEP_MS = 60_000;

/** The user's actions limited here, over all their conversations (the rooms limit what happens inside one). */
export type UserAction = "create" | "membership";

/** What an inbox socket carries through hibernation: when its client was last heard (pings are the runtime's). */
interface Attachment {
  lastSeenAt: number;
}

/**
 * One user's inbox: their conversations as the list shows them, kept live over one socket per device. The
 * rooms feed it through their outbox (never on an ack path); it stores the latest state of each
 * conversation with the version at which it changed, and sends each change to every socket of the user.
 * The class reads as its lifecycle: waking, connecting, socket events, RPCs, the alarm.
 */
export class UserInbox extends DurableObject<Env> {
  readonly #limits: Limits;
  readonly #sql: SqlStorage;
  #seeding: Promise<void> | undefined;
  /** In memory: an evicted inbox forgets them, which is an idle user's bucket refilled anyway. */
  readonly #actions: Record<UserAction, Buckets>;

  // ---- Waking -------------------------------------------------------------------------------------------

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#limits = readLimits(env);
    const perMinute = (size: number, refill: number) => ({ size, refillPerSecond: refill / 60 });
    this.#actions = {
      create: new Buckets(perMinute(this.#limits.createBucketSize, this.#limits.createRefillPerMinute)),
      membership: new Buckets(perMinute(this.#limits.membershipBucketSize, this.#limits.membershipRefillPerMinute)),
    };
    this.#sql = ctx.storage.sql;
    migrate(ctx.storage);
    // `ping` is answered by the runtime, without waking the inbox.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  /** The user whose inbox this is: the Object's name. */
  get userId(): string {
    return this.ctx.id.name ?? "";
  }

  /**
   * Once, on first use: the conversations the user had before their inbox existed, from the directory (the
   * rooms tell the inbox only of changes). Versioned like the rooms' own deliveries, so that either may come
   * first. While D1 fails the inbox serves what it has and tries again on the next request.
   */
  async #seeded(): Promise<void> {
    if (isSeeded(this.#sql)) return;
    this.#seeding ??= (async () => {
      try {
        const found = await allConversationsOf(directory(this.env), this.userId, SEED_PAGES);
        const changes = found.map(
          (c): InboxChange => ({ kind: "conversation", conversation: toSharedConversation(c.conversation, c.members) }),
        );
        this.#broadcast(applyChanges(this.ctx.storage, this.userId, changes));
        markSeeded(this.#sql);
      } catch (err) {
        console.error("inbox seed failed", err);
      } finally {
        this.#seeding = undefined;
      }
    })();
    await this.#seeding;
  }

  // ---- Connecting ---------------------------------------------------------------------------------------

  /** The WebSocket upgrade, forwarded by the Worker after it authenticated the user. */
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("X-User-Id") !== this.userId) {
      return errorJson(new ApiError("unauthenticated", "This inbox is not yours"));
    }
    await this.#seeded();
    if (this.ctx.getWebSockets().length >= this.#limits.socketsPerUser) {
      const message = `At most ${this.#limits.socketsPerUser} inbox sockets per user`;
      return errorJson(new ApiError("rate_limited", message, undefined, 5));
    }
    const since = request.headers.get("X-Since");
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ lastSeenAt: Date.now() } satisfies Attachment);
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + SWEEP_MS);
    // One synchronous pass: no live frame can come between `inbox_ready`, the catch-up and what follows.
    const version = currentVersion(this.#sql);
    send(server, { type: "inbox_ready", userId: this.userId, version, ...unreadTotals(this.#sql) });
    if (since !== null) {
      const from = Number(since);
      if (catchUpPlan(from, forgottenUpTo(this.#sql), version) === "replay") {
        for (const frame of changesSince(this.#sql, from)) send(server, frame);
      } else {
        send(server, { type: "resync", fromVersion: from });
      }
    }
    return new Response(null, { status: 101, webSocket: client });
  }

  // ---- Socket events ------------------------------------------------------------------------------------

  /** The client sends only `ping`, which the runtime answers: anything else is refused, and changes nothing. */
  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    if (typeof data !== "string") return closeSocket(ws, 1003, "binary frames are not accepted");
    ws.serializeAttachment({ lastSeenAt: Date.now() } satisfies Attachment);
    send(ws, { type: "error", code: "validation_failed", message: "The inbox socket takes only ping" });
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Complete the closing handshake, or the client never sees its close event.
    closeSocket(ws, code === 1005 || code === 1006 ? 1000 : code, reason);
  }

  // ---- RPC ----------------------------------------------------------------------------------------------

  /** From a room's outbox: what changed in its conversation for this user. Idempotent, in any order. */
  async deliver(changes: InboxChange[]): Promise<void> {
    this.#broadcast(applyChanges(this.ctx.storage, this.userId, changes));
  }

  async totals() {
    await this.#seeded();
    return { version: currentVersion(this.#sql), ...unreadTotals(this.#sql) };
  }

  /** A token of the user's bucket for this action: 0, or how long (ms) until there is one. */
  async take(action: UserAction): Promise<number> {
    return this.#actions[action].tryTake(action, Date.now());
  }

  async issueTicket(): Promise<{ ticket: string; expiresAt: number }> {
    return issueTicket(this.#sql, this.userId, this.#limits.ticketTtlSeconds, Date.now());
  }

  /** Whether the ticket was issued by this inbox and is still valid; it is used up either way. */
  async redeemTicket(ticket: string): Promise<boolean> {
    return redeemTicket(this.#sql, ticket, Date.now()) === this.userId;
  }

  // ---- The alarm: closing silent sockets ---------------------------------------------------------------

  /** A socket whose client sent nothing, not even `ping`, for two minutes is closed, so that it reconnects. */
  override async alarm(): Promise<void> {
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      const attachment = ws.deserializeAttachment() as Attachment | null;
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      if (Math.max(attachment?.lastSeenAt ?? 0, pinged) + IDLE_SOCKET_MS <= now) {
        closeSocket(ws, 1000, "no frame or ping for too long");
      }
    }
    if (this.ctx.getWebSockets().length > 0) await this.ctx.storage.setAlarm(now + SWEEP_MS);
  }

  // ---- Helpers ------------------------------------------------------------------------------------------

  /** The frames of applied changes go to every socket of the user, in version order, each serialized once. */
  #broadcast(frames: InboxFrame[]): void {
    if (frames.length === 0) return;
    const texts = frames.map((f) => JSON.stringify(f));
    for (const ws of this.ctx.getWebSockets()) {
      for (const text of texts) send(ws, text);
    }
  }
}

/** Sends a frame; a socket that cannot take it is closed, so that its client reconnects. */
function send(ws: WebSocket, frame: InboxFrame | string): void {
  try {
    ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  } catch {
    closeSocket(ws, 1011, "could not send");
  }
}
