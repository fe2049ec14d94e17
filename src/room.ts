import { DurableObject } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import type { Db } from "./db/conversations";
import { findConversationFor, findMembership } from "./db/conversations";
import {
  findMessageByLocalId,
  findMessageBySeq,
  findMessagesByIds,
  historyPage,
  type Outcome,
  planCommit,
  type UnreadAfterCommit,
  type Write,
} from "./db/messages";
import { batchSql } from "./db/raw";
import { newId, type ParticipantRow, toParticipant } from "./domain/conversations";
import {
  ABUSE_STRIKES,
  type Bucket,
  catchUpPlan,
  contentHash,
  DELIVERED_FLUSH_MS,
  IDLE_SOCKET_MS,
  type MessageRow,
  TYPING_TTL_MS,
  takeToken,
  toMessage,
} from "./domain/messages";
import { type Env, type Limits, readLimits } from "./env";
import { ApiError, type ErrorCode, errorJson, notFound, toApiError, validationFailed } from "./errors";
import { pushEnabled } from "./push/config";
import { schedulePushCheck } from "./push/tasks";
import {
  type ClientFrame,
  type MessageDto,
  type MessageSchemas,
  messageSchemasFor,
  type ParticipantDto,
  type ServerFrame,
} from "./schemas";

/** What an RPC to the room returns: errors travel as values, so the Worker can answer with their code. */
export type RoomResult<T> =
  | { ok: true; value: T }
  | { ok: false; error: { code: ErrorCode; message: string; details?: unknown; retryAfter?: number } };

/** Per-socket state, kept on the socket so that it survives hibernation. */
interface Attachment {
  userId: string;
  lastSeenAt: number;
}

/** A socket between `ready` and the end of its catch-up: broadcasts skip it, and what else happens waits. */
interface CatchingUp {
  /** Seqs acked to it meanwhile, which its catch-up must not send again as messages. */
  acked: Set<number>;
  /** Frames other than messages (edits, receipts, typing...), sent once it is live. */
  backlog: string[];
}

interface Pending {
  write: Write;
  origin: WebSocket | undefined;
  /** Only these users' sockets are told of the write (delivered markers); everyone when absent. */
  audience?: ReadonlySet<string>;
  /** Sent round again once already, after a batch that failed but had committed. */
  retried?: boolean;
  resolve: (outcome: Outcome) => void;
  reject: (error: ApiError) => void;
}

/** At most this many writes share one D1 batch (statements stay well under D1's limits). */
const MAX_GROUP = 64;
/** Frames a delivered flush sends between two turns of the event loop, so that messages are not held up. */
const RECEIPT_FRAMES_PER_TURN = 500;
/** While sockets are open, the room wakes at least this often to find dead ones. */
const SWEEP_MS = 60_000;
const CATCH_UP_PAGE = 100;

const K = { conversationId: "conversationId", delivered: "delivered", typing: "typing", ticket: "ticket:" } as const;

const ok = <T>(value: T): RoomResult<T> => ({ ok: true, value });
const fail = (error: ApiError): RoomResult<never> => ({
  ok: false,
  error: { code: error.code, message: error.message, details: error.details, retryAfter: error.retryAfter },
});

/**
 * One conversation: its live sockets, the order of its messages, and their way into D1.
 *
 * Every ordered write (send, edit, delete, read and delivered markers) goes through one serialized commit
 * loop that writes whatever arrived meanwhile as one D1 batch, then acks and broadcasts in seq order.
 * Everything needed after an eviction lives in D1, in this object's storage, or on the sockets.
 */
export class ConversationRoom extends DurableObject<Env> {
  /** The database; a field so that a test can put a failing one in its place. */
  db: Db;
  readonly #limits: Limits;
  #frameSchemas: MessageSchemas | undefined;
  #pending: Pending[] = [];
  #draining = false;
  /** The highest committed seq, once known. */
  #lastSeq: number | undefined;
  #sockets: Map<WebSocket, Attachment> | undefined;
  #buckets = new Map<string, Bucket>();
  #strikes = new WeakMap<WebSocket, number>();
  /**
   * In memory only: a catch-up cannot outlive the instance, so a socket found after a wake-up is live. A Map,
   * not a WeakMap, so that a broadcast can skip the lookup when it is empty, as it almost always is.
   */
  #catchingUp = new Map<WebSocket, CatchingUp>();
  #alarmAt: number | null = null;
  /** Delivered markers not yet in D1, and the senders of what they cover; mirrored in storage once per group. */
  #delivered: PendingDelivered | undefined;
  #deliveredChanged = false;
  /** Who is typing, until when (ms); mirrored in storage, so that an eviction cannot leave a typist unended. */
  #typingUntil: Map<string, number> | undefined;
  /** Delivered receipts of the last flush not sent yet, by the user they are about (see #sendReceipts). */
  #receiptsDue = new Map<string, { frame: ServerFrame; audience: ReadonlySet<string> | undefined }>();
  #sendingReceipts = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.db = drizzle(env.DB);
    this.#limits = readLimits(env);
    // `ping` is answered by the runtime, without waking the room.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
    void ctx.blockConcurrencyWhile(async () => {
      this.#alarmAt = await ctx.storage.getAlarm();
    });
  }

  // ---- Connecting ---------------------------------------------------------------------------------------

  /** The WebSocket upgrade, forwarded by the Worker after it checked the user and their membership. */
  override async fetch(request: Request): Promise<Response> {
    const conversationId = request.headers.get("X-Conversation-Id") ?? "";
    const userId = request.headers.get("X-User-Id") ?? "";
    const since = Number(request.headers.get("X-Since") ?? "-1");

    const found = await findConversationFor(this.db, conversationId, userId);
    if (!found) return errorJson(notFound());
    this.#remember(conversationId);
    // Counted after the await, so that upgrades arriving together cannot pass the cap together.
    if (this.#userSockets(userId).length >= this.#limits.socketsPerUser) {
      const message = `At most ${this.#limits.socketsPerUser} sockets per user and conversation`;
      return errorJson(new ApiError("rate_limited", message, undefined, 5));
    }
    this.#lastSeq = Math.max(this.#lastSeq ?? 0, found.conversation.lastSeq);

    const { 0: client, 1: server } = new WebSocketPair();
    const wasOnline = this.#userSockets(userId).length > 0;
    this.ctx.acceptWebSocket(server, [userId]);
    this.#track(server, { userId, lastSeenAt: Date.now() });
    this.#catchingUp.set(server, { acked: new Set(), backlog: [] });

    const lastSeq = found.conversation.lastSeq;
    this.#sendTo(server, {
      type: "ready",
      conversationId,
      userId,
      lastSeq,
      participants: found.members.map(toParticipant),
      online: this.#onlineUsers(),
      typing: this.#typingUsers(Date.now()),
    });
    if (!wasOnline) this.#broadcast({ type: "presence", userId, online: true }, { exceptUser: userId });
    // Without `since`, the client has everything up to `ready`'s lastSeq from REST: catch up from there.
    this.ctx.waitUntil(this.#catchUp(server, since >= 0 ? since : lastSeq));
    this.#scheduleAlarm(Date.now() + SWEEP_MS);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** Sends what the socket missed (or `resync` past the replay limit), then makes it live, with no gap. */
  async #catchUp(ws: WebSocket, since: number): Promise<void> {
    const conversationId = this.#conversationId();
    try {
      const lastSeq = this.#lastSeq ?? 0;
      if (catchUpPlan(since, lastSeq, this.#limits.replay) === "resync") {
        this.#sendTo(ws, { type: "resync", fromSeq: since });
        this.#setLive(ws);
        return;
      }
      let cursor = since;
      // Live broadcasts skip this socket until it is live, so read until the loop has nothing newer.
      while (cursor < (this.#lastSeq ?? 0)) {
        const { rows } = await historyPage(this.db, conversationId, { after: cursor, limit: CATCH_UP_PAGE });
        if (rows.length === 0) break;
        const acked = this.#catchingUp.get(ws)?.acked;
        for (const row of rows) {
          if (!acked?.has(row.seq)) this.#sendTo(ws, { type: "message", message: toMessage(row) });
        }
        cursor = rows[rows.length - 1]?.seq ?? cursor;
        this.#noteDelivered(
          [this.#attachment(ws)?.userId],
          cursor,
          rows.map((r) => r.senderId),
        );
        this.#saveDelivered();
      }
      this.#setLive(ws);
    } catch (err) {
      console.error("catch-up failed", err);
      this.#sendTo(ws, { type: "error", code: "unavailable", message: "Catching up failed; reconnect" });
      ws.close(1012, "catching up failed; reconnect");
    }
  }

  // ---- Socket events ------------------------------------------------------------------------------------

  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    const attachment = this.#attachment(ws);
    if (!attachment) return;
    if (typeof data !== "string") return ws.close(1003, "binary frames are not accepted");
    if (data.length > this.#limits.frameBytes / 3 && byteLength(data) > this.#limits.frameBytes) {
      return ws.close(1009, `frames are limited to ${this.#limits.frameBytes} bytes`);
    }
    this.#touch(ws, attachment);

    let raw: unknown;
    try {
      raw = JSON.parse(data);
    } catch {
      return this.#refuse(ws, new ApiError("validation_failed", "A frame is one JSON object"));
    }
    const ref = localIdOf(raw);
    const parsed = this.#schemas().clientFrame.safeParse(raw);
    if (!parsed.success) return this.#refuse(ws, validationFailed(parsed.error), ref);
    try {
      await this.#handle(ws, attachment.userId, parsed.data);
    } catch (err) {
      // A bug, not the client's fault: say so without details, and keep the socket.
      console.error("frame failed", err);
      this.#refuse(ws, new ApiError("internal", "Internal error"), ref);
    }
  }

  async #handle(ws: WebSocket, userId: string, frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case "send": {
        const result = await this.#send(userId, frame.content, frame.localId, ws);
        if (!result.ok) return this.#refuse(ws, toError(result), frame.localId);
        this.#strikes.delete(ws);
        // A new message was acked by the commit loop, in order; a retry gets its original here.
        if (result.value.status === 200) {
          this.#sendTo(ws, { type: "ack", localId: frame.localId, message: result.value.message });
        }
        return;
      }
      case "typing":
        return this.#setTyping(userId, frame.typing);
      case "read": {
        const result = await this.#markRead(userId, frame.seq, ws);
        if (!result.ok) this.#refuse(ws, toError(result));
        return;
      }
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#closed(ws);
    // Complete the closing handshake, or the client never sees its close event.
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.#closed(ws);
  }

  // ---- RPC from the Worker ------------------------------------------------------------------------------

  async sendMessage(input: {
    conversationId: string;
    senderId: string;
    content: string;
    localId: string | null;
  }): Promise<RoomResult<{ status: 200 | 201; message: MessageDto }>> {
    this.#remember(input.conversationId);
    return this.#send(input.senderId, input.content, input.localId, undefined);
  }

  async editMessage(input: {
    conversationId: string;
    actorId: string;
    seq: number;
    content: string;
  }): Promise<RoomResult<MessageDto>> {
    this.#remember(input.conversationId);
    const write: Write = {
      kind: "edit",
      actorId: input.actorId,
      seq: input.seq,
      content: input.content,
      now: Date.now(),
    };
    return this.#changeMessage(write);
  }

  async deleteMessage(input: {
    conversationId: string;
    actorId: string;
    seq: number;
  }): Promise<RoomResult<MessageDto>> {
    this.#remember(input.conversationId);
    return this.#changeMessage({ kind: "delete", actorId: input.actorId, seq: input.seq, now: Date.now() });
  }

  async markRead(input: { conversationId: string; userId: string; seq: number }): Promise<RoomResult<ParticipantDto>> {
    this.#remember(input.conversationId);
    return this.#markRead(input.userId, input.seq, undefined);
  }

  async setTyping(input: { conversationId: string; userId: string; typing: boolean }): Promise<void> {
    this.#remember(input.conversationId);
    this.#setTyping(input.userId, input.typing);
  }

  async issueTicket(input: { conversationId: string; userId: string }): Promise<{ ticket: string; expiresAt: number }> {
    this.#remember(input.conversationId);
    const now = Date.now();
    const kv = this.ctx.storage.kv;
    for (const [key, value] of kv.list<{ expiresAt: number }>({ prefix: K.ticket, limit: 100 })) {
      if (value.expiresAt <= now) kv.delete(key);
    }
    const ticket = `${newId()}${newId()}`;
    const expiresAt = now + this.#limits.ticketTtlSeconds * 1000;
    kv.put(K.ticket + ticket, { userId: input.userId, expiresAt });
    return { ticket, expiresAt };
  }

  /** The user a ticket was issued to, once: a ticket is deleted as it is redeemed. */
  async redeemTicket(ticket: string): Promise<string | null> {
    const key = K.ticket + ticket;
    const value = this.ctx.storage.kv.get<{ userId: string; expiresAt: number }>(key);
    if (!value) return null;
    this.ctx.storage.kv.delete(key);
    return value.expiresAt > Date.now() ? value.userId : null;
  }

  /** The users with a socket open here right now; the push consumer sends nothing to them. */
  async onlineUserIds(): Promise<string[]> {
    return this.#onlineUsers();
  }

  /** After participants were added or removed in D1: tell every socket, and close the removed users' sockets. */
  async participantsChanged(input: {
    conversationId: string;
    participants: ParticipantDto[];
    removed: string[];
  }): Promise<void> {
    this.#remember(input.conversationId);
    for (const userId of input.removed) {
      for (const ws of this.#userSockets(userId)) {
        this.#closed(ws);
        ws.close(4403, "removed from the conversation");
      }
    }
    this.#broadcast({ type: "participants", participants: input.participants });
  }

  // ---- Writes -------------------------------------------------------------------------------------------

  async #send(
    senderId: string,
    content: string,
    localId: string | null,
    origin: WebSocket | undefined,
  ): Promise<RoomResult<{ status: 200 | 201; message: MessageDto }>> {
    const now = Date.now();
    const taken = takeToken(
      this.#buckets.get(senderId),
      { size: this.#limits.sendBucketSize, refillPerSecond: this.#limits.sendRefillPerSecond },
      now,
    );
    this.#buckets.set(senderId, taken.bucket);
    if (!taken.allowed) {
      return fail(new ApiError("rate_limited", "Too many messages; slow down", undefined, taken.retryAfterMs / 1000));
    }
    try {
      const outcome = await this.#commit({ kind: "send", id: newId(), senderId, content, localId, now }, origin);
      if (outcome) return ok({ status: 201, message: toMessage(outcome as MessageRow) });
      // Nothing inserted: the (sender, localId) exists already, or the sender is no longer a participant.
      const original = localId ? await findMessageByLocalId(this.db, this.#conversationId(), senderId, localId) : null;
      if (!original) return fail(notFound());
      // Compared with the content as first sent: an edit or a delete since then does not make a retry a reuse.
      if (original.sentHash !== (await contentHash(content))) {
        return fail(new ApiError("idempotency_conflict", "This localId was used for other content"));
      }
      return ok({ status: 200, message: toMessage(original) });
    } catch (err) {
      return fail(toApiError(err));
    }
  }

  async #changeMessage(write: Extract<Write, { kind: "edit" | "delete" }>): Promise<RoomResult<MessageDto>> {
    try {
      const outcome = (await this.#commit(write, undefined)) as MessageRow | null;
      if (outcome) return ok(toMessage(outcome));
      const message = await findMessageBySeq(this.db, this.#conversationId(), write.seq);
      const member = await findConversationFor(this.db, this.#conversationId(), write.actorId);
      if (!message || !member) return fail(notFound());
      if (message.deletedAt !== null) return fail(new ApiError("forbidden", "A deleted message cannot be edited"));
      return fail(
        new ApiError(
          "forbidden",
          write.kind === "edit" ? "Only the sender can edit a message" : "Only the sender or an owner can delete",
        ),
      );
    } catch (err) {
      return fail(toApiError(err));
    }
  }

  async #markRead(userId: string, seq: number, origin: WebSocket | undefined): Promise<RoomResult<ParticipantDto>> {
    try {
      const moved = (await this.#commit({ kind: "read", userId, seq }, origin)) as ParticipantRow | null;
      const markers = moved ?? (await findMembership(this.db, this.#conversationId(), userId));
      return markers ? ok(toParticipant(markers)) : fail(notFound());
    } catch (err) {
      return fail(toApiError(err));
    }
  }

  /** Queues a write for the commit loop; resolves once it is durable in D1 and announced. */
  #commit(write: Write, origin: WebSocket | undefined, audience?: ReadonlySet<string>): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ write, origin, audience, resolve, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  /**
   * The commit loop: one D1 batch at a time, each holding everything that arrived while the previous one was
   * in flight (group commit). Acks and broadcasts follow a batch's success in its order, so every socket sees
   * seq ascending; a failed batch stores nothing, consumes no seq and announces nothing.
   */
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#pending.length > 0) {
        // What the last group noted as delivered reaches storage once, not once per message.
        this.#saveDelivered();
        const group = this.#pending.splice(0, MAX_GROUP);
        const plan = planCommit(this.#conversationId(), await withSentHashes(group), {
          listUnread: pushEnabled(this.env),
        });
        let results: unknown[][];
        try {
          results = await batchSql(this.db, plan.statements);
        } catch (err) {
          await this.#failed(group, err);
          continue;
        }
        const outcomes = plan.outcomes(results);
        group.forEach((p, i) => {
          this.#settle(p, outcomes[i] ?? null);
        });
        const unread = plan.unread(results);
        if (unread) this.#schedulePush(unread);
      }
    } finally {
      this.#saveDelivered();
      this.#draining = false;
    }
  }

  #settle(pending: Pending, outcome: Outcome): void {
    this.#announce(pending, outcome);
    pending.resolve(outcome);
  }

  /**
   * A batch failed. D1 can lose its reply after it committed, so before saying "nothing was stored" the room
   * asks D1 whether the batch is there: it is, and its sends are announced as usual while its other writes
   * (all idempotent) go round again, once; it is not, or D1 cannot say, and nothing was stored.
   */
  async #failed(group: Pending[], err: unknown): Promise<void> {
    const error = toApiError(err);
    if (error.code === "internal") console.error("commit failed", err);
    let found: { committed: boolean; stored: MessageRow[] } = { committed: false, stored: [] };
    if (error.code === "unavailable") {
      try {
        found = await this.#committedAnyway(group);
      } catch {
        // Still unreachable: it cannot be known, so say what the contract lets a client act on safely.
      }
    }
    const again = found.committed ? group.filter((p) => p.write.kind !== "send" && !p.retried) : [];
    for (const p of group) {
      if (p.write.kind === "send" && found.committed) {
        const { id } = p.write;
        this.#settle(p, found.stored.find((row) => row.id === id) ?? null);
      } else if (!again.includes(p)) p.reject(error);
    }
    this.#pending.unshift(...again.map((p) => ({ ...p, retried: true })));
  }

  /**
   * Whether a failed batch committed all the same. A batch is atomic, so one write tells: a send's message is
   * stored, an edit's or a delete's time is on its message, a read marker stands where it was asked to.
   */
  async #committedAnyway(group: Pending[]): Promise<{ committed: boolean; stored: MessageRow[] }> {
    const ids = group.flatMap(({ write }) => (write.kind === "send" ? [write.id] : []));
    if (ids.length > 0) {
      const stored = await findMessagesByIds(this.db, ids);
      return { committed: stored.length > 0, stored };
    }
    for (const { write } of group) {
      if (write.kind === "edit" || write.kind === "delete") {
        const row = await findMessageBySeq(this.db, this.#conversationId(), write.seq);
        const committed =
          write.kind === "edit"
            ? row?.editedAt === write.now && row.content === write.content
            : row?.deletedAt === write.now;
        return { committed, stored: [] };
      }
      if (write.kind === "read") {
        const markers = await findMembership(this.db, this.#conversationId(), write.userId);
        const wanted = Math.min(write.seq, this.#lastSeq ?? write.seq);
        return { committed: markers !== null && markers.lastReadSeq >= wanted, stored: [] };
      }
    }
    return { committed: false, stored: [] };
  }

  /** Tells the sockets what a committed write changed. */
  #announce({ write, origin, audience }: Pending, outcome: Outcome): void {
    if (!outcome) return;
    switch (write.kind) {
      case "send": {
        const row = outcome as MessageRow;
        this.#lastSeq = Math.max(this.#lastSeq ?? 0, row.seq);
        const message = toMessage(row);
        const recipients = this.#broadcast({ type: "message", message }, { except: origin });
        if (origin && write.localId) {
          this.#sendTo(origin, { type: "ack", localId: write.localId, message });
          this.#catchingUp.get(origin)?.acked.add(row.seq);
        }
        this.#noteDelivered(
          recipients.filter((u) => u !== row.senderId),
          row.seq,
          [row.senderId],
        );
        // A sent message ends its sender's typing.
        if (this.#typing().has(row.senderId)) this.#setTyping(row.senderId, false);
        return;
      }
      case "edit":
      case "delete": {
        const row = outcome as MessageRow;
        const changed = write.kind === "edit" || row.deletedAt === write.now;
        if (changed) this.#broadcast({ type: "message_updated", message: toMessage(row) });
        return;
      }
      case "read": {
        const p = outcome as ParticipantRow;
        // Newer than any delivered receipt of this user still due, which must not follow it.
        this.#receiptsDue.delete(p.userId);
        this.#broadcast(receipt(p), { except: origin });
        return;
      }
      case "delivered":
        // Delivered ticks are shown to the senders of the messages delivered: only their sockets are told.
        for (const p of outcome as ParticipantRow[]) {
          // A receipt still due from the flush before is replaced, its audience kept.
          const before = this.#receiptsDue.get(p.userId)?.audience;
          const everyone = before ? new Set([...before, ...(audience ?? [])]) : audience;
          this.#receiptsDue.set(p.userId, { frame: receipt(p), audience: everyone });
        }
        void this.#sendReceipts();
        return;
    }
  }

  /** Schedules a push check of committed messages, unless everyone who has not read them has a socket here. */
  #schedulePush({ seq, userIds }: UnreadAfterCommit): void {
    try {
      const online = new Set(this.#onlineUsers());
      if (userIds.every((u) => online.has(u))) return;
      // Not awaited: acks and broadcasts never wait for, or fail with, push notifications.
      this.ctx.waitUntil(schedulePushCheck(this.env, { conversationId: this.#conversationId(), seq }));
    } catch (err) {
      console.error("push check not scheduled", err);
    }
  }

  // ---- Delivered markers, typing and dead sockets: kept in memory and storage, settled by the alarm --------

  #pendingDelivered(): PendingDelivered {
    if (!this.#delivered) {
      const stored = this.ctx.storage.kv.get<StoredDelivered>(K.delivered);
      this.#delivered = {
        markers: new Map(Object.entries(stored?.markers ?? {})),
        notify: new Set(stored?.notify ?? []),
      };
    }
    return this.#delivered;
  }

  /**
   * Users whose sockets were sent messages up to `seq`, from `senders`; written to D1 and announced to those
   * senders within a second. Kept in memory: `#saveDelivered` puts them in storage once per group.
   */
  #noteDelivered(userIds: (string | undefined)[], seq: number, senders: string[]): void {
    const { markers, notify } = this.#pendingDelivered();
    let moved = false;
    for (const userId of userIds) {
      if (userId && (markers.get(userId) ?? 0) < seq) {
        markers.set(userId, seq);
        moved = true;
      }
    }
    if (!moved) return;
    for (const sender of senders) notify.add(sender);
    this.#deliveredChanged = true;
    this.#scheduleAlarm(Date.now() + DELIVERED_FLUSH_MS);
  }

  #saveDelivered(): void {
    if (!this.#deliveredChanged || !this.#delivered) return;
    this.#deliveredChanged = false;
    const { markers, notify } = this.#delivered;
    if (markers.size === 0) this.ctx.storage.kv.delete(K.delivered);
    else this.ctx.storage.kv.put(K.delivered, { markers: Object.fromEntries(markers), notify: [...notify] });
  }

  /** Writes the pending delivered markers to D1 in one statement; on failure they wait for the next alarm. */
  async #flushDelivered(): Promise<void> {
    const taken = this.#pendingDelivered();
    if (taken.markers.size === 0) return;
    this.#delivered = { markers: new Map(), notify: new Set() };
    this.#deliveredChanged = true;
    this.#saveDelivered();
    try {
      await this.#commit({ kind: "delivered", markers: Object.fromEntries(taken.markers) }, undefined, taken.notify);
    } catch {
      // Kept for the next alarm; markers only move forward, so writing them again is harmless.
      for (const [userId, seq] of taken.markers) this.#noteDelivered([userId], seq, []);
      for (const sender of taken.notify) this.#pendingDelivered().notify.add(sender);
      this.#deliveredChanged = true;
      this.#saveDelivered();
    }
  }

  /**
   * Sends the due delivered receipts a few hundred frames at a time. A flush in a busy group is one receipt per
   * user to every sender's sockets, thousands of frames at once; sent in one go, they held every message
   * behind them for hundreds of milliseconds.
   */
  async #sendReceipts(): Promise<void> {
    if (this.#sendingReceipts) return;
    this.#sendingReceipts = true;
    try {
      while (this.#receiptsDue.size > 0) {
        // Each receipt goes to at most every socket.
        let turn = Math.max(1, Math.floor(RECEIPT_FRAMES_PER_TURN / Math.max(1, this.#all().size)));
        for (const [userId, { frame, audience }] of this.#receiptsDue) {
          this.#receiptsDue.delete(userId);
          this.#broadcast(frame, { only: audience, exceptUser: userId });
          if (--turn === 0) break;
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } finally {
      this.#sendingReceipts = false;
    }
  }

  #setTyping(userId: string, typing: boolean): void {
    const now = Date.now();
    const until = this.#typing();
    // A user stays typing until an end is announced, whether told or by the alarm after expiry.
    const wasTyping = until.has(userId);
    if (typing) until.set(userId, now + TYPING_TTL_MS);
    else until.delete(userId);
    if (typing || wasTyping) this.ctx.storage.kv.put(K.typing, Object.fromEntries(until));
    // Refreshes are silent: only a change of state is broadcast.
    if (typing !== wasTyping) this.#broadcast({ type: "typing", userId, typing }, { exceptUser: userId });
    if (typing) this.#scheduleAlarm(now + TYPING_TTL_MS);
  }

  #typing(): Map<string, number> {
    this.#typingUntil ??= new Map(Object.entries(this.ctx.storage.kv.get<Record<string, number>>(K.typing) ?? {}));
    return this.#typingUntil;
  }

  #typingUsers(now: number): string[] {
    return [...this.#typing()].filter(([, at]) => at > now).map(([userId]) => userId);
  }

  override async alarm(): Promise<void> {
    this.#alarmAt = null;
    const now = Date.now();

    for (const [userId, at] of [...this.#typing()]) {
      if (at <= now) this.#setTyping(userId, false);
    }

    for (const [ws, attachment] of this.#all()) {
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      if (Math.max(attachment.lastSeenAt, pinged) + IDLE_SOCKET_MS <= now) {
        this.#closed(ws);
        ws.close(1000, "no frame or ping for too long");
      }
    }

    await this.#flushDelivered();

    const nextTyping = Math.min(...this.#typing().values());
    if (Number.isFinite(nextTyping)) this.#scheduleAlarm(nextTyping);
    if (this.#all().size > 0) this.#scheduleAlarm(Date.now() + SWEEP_MS);
  }

  #scheduleAlarm(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  // ---- Sockets ------------------------------------------------------------------------------------------

  /** The open sockets and their state; rebuilt from the attachments after a wake-up. */
  #all(): Map<WebSocket, Attachment> {
    if (!this.#sockets) {
      this.#sockets = new Map();
      for (const ws of this.ctx.getWebSockets()) {
        const attachment = ws.deserializeAttachment() as Attachment | null;
        if (attachment) this.#sockets.set(ws, attachment);
      }
    }
    return this.#sockets;
  }

  #attachment(ws: WebSocket): Attachment | undefined {
    return this.#all().get(ws);
  }

  #track(ws: WebSocket, attachment: Attachment): void {
    ws.serializeAttachment(attachment);
    this.#all().set(ws, attachment);
  }

  #setLive(ws: WebSocket): void {
    const caughtUp = this.#catchingUp.get(ws);
    this.#catchingUp.delete(ws);
    for (const text of caughtUp?.backlog ?? []) ws.send(text);
  }

  #touch(ws: WebSocket, attachment: Attachment): void {
    const now = Date.now();
    // Written back at most every few seconds: it only needs to be fresh enough for the idle sweep.
    if (now - attachment.lastSeenAt > 5_000) this.#track(ws, { ...attachment, lastSeenAt: now });
  }

  #userSockets(userId: string): WebSocket[] {
    return [...this.#all()].filter(([, a]) => a.userId === userId).map(([ws]) => ws);
  }

  #onlineUsers(): string[] {
    return [...new Set([...this.#all().values()].map((a) => a.userId))];
  }

  /** A socket is gone: forget it, and when it was its user's last, they are offline and no longer typing. */
  #closed(ws: WebSocket): void {
    this.#catchingUp.delete(ws);
    const attachment = this.#attachment(ws);
    if (!attachment || !this.#all().delete(ws)) return;
    const { userId } = attachment;
    if (this.#userSockets(userId).length > 0) return;
    if (this.#typing().has(userId)) this.#setTyping(userId, false);
    this.#broadcast({ type: "presence", userId, online: false });
  }

  #sendTo(ws: WebSocket, frame: ServerFrame): void {
    try {
      ws.send(JSON.stringify(frame));
    } catch {
      this.#closed(ws);
    }
  }

  /**
   * Sends one frame, serialized once, to every live socket but the excluded (or of `only` those users);
   * returns the users reached.
   */
  #broadcast(
    frame: ServerFrame,
    skip: { except?: WebSocket | undefined; exceptUser?: string; only?: ReadonlySet<string> | undefined } = {},
  ): string[] {
    const text = JSON.stringify(frame);
    const reached = new Set<string>();
    for (const [ws, attachment] of this.#all()) {
      if (ws === skip.except || attachment.userId === skip.exceptUser) continue;
      if (skip.only && !skip.only.has(attachment.userId)) continue;
      const catchingUp = this.#catchingUp.size > 0 ? this.#catchingUp.get(ws) : undefined;
      if (catchingUp) {
        // Its catch-up reads messages from D1; anything else it is told once live.
        if (frame.type !== "message") catchingUp.backlog.push(text);
        continue;
      }
      try {
        ws.send(text);
        reached.add(attachment.userId);
      } catch {
        this.#closed(ws);
      }
    }
    return [...reached];
  }

  /** A refused frame: an error frame; a socket that keeps being refused sends is closed for abuse. */
  #refuse(ws: WebSocket, error: ApiError, ref?: string): void {
    const frame: ServerFrame = { type: "error", code: error.code, message: error.message };
    if (ref !== undefined) frame.ref = ref;
    if (error.code === "rate_limited" && error.retryAfter !== undefined)
      frame.retryAfterMs = Math.ceil(error.retryAfter * 1000);
    this.#sendTo(ws, frame);
    if (error.code !== "rate_limited") return;
    const strikes = (this.#strikes.get(ws) ?? 0) + 1;
    this.#strikes.set(ws, strikes);
    if (strikes >= ABUSE_STRIKES) {
      this.#closed(ws);
      ws.close(4429, "too many messages");
    }
  }

  // ---- Identity -----------------------------------------------------------------------------------------

  #remember(conversationId: string): void {
    if (this.ctx.storage.kv.get(K.conversationId) !== conversationId) {
      this.ctx.storage.kv.put(K.conversationId, conversationId);
    }
  }

  #conversationId(): string {
    return this.ctx.storage.kv.get<string>(K.conversationId) ?? "";
  }

  #schemas(): MessageSchemas {
    this.#frameSchemas ??= messageSchemasFor(this.#limits);
    return this.#frameSchemas;
  }
}

/** Delivered markers waiting for the alarm, as kept in memory and as stored. */
interface PendingDelivered {
  markers: Map<string, number>;
  notify: Set<string>;
}
interface StoredDelivered {
  markers: Record<string, number>;
  notify: string[];
}

const receipt = (p: ParticipantRow): ServerFrame => ({
  type: "receipt",
  userId: p.userId,
  lastReadSeq: p.lastReadSeq,
  lastDeliveredSeq: p.lastDeliveredSeq,
});

const byteLength = (text: string) => new TextEncoder().encode(text).byteLength;

/** The group's writes, sends with a localId given their content hash (here, so the queue keeps its order). */
function withSentHashes(group: Pending[]): Promise<Write[]> {
  return Promise.all(
    group.map(async ({ write }) =>
      write.kind === "send" && write.localId ? { ...write, sentHash: await contentHash(write.content) } : write,
    ),
  );
}

/** The localId a frame concerned, when it has one, for the `ref` of an error frame. */
function localIdOf(raw: unknown): string | undefined {
  if (typeof raw !== "object" || raw === null || !("localId" in raw)) return undefined;
  return typeof raw.localId === "string" && raw.localId.length <= 64 ? raw.localId : undefined;
}

function toError(result: Extract<RoomResult<unknown>, { ok: false }>): ApiError {
  const { code, message, details, retryAfter } = result.error;
  return new ApiError(code, message, details, retryAfter);
}

export { toError as roomError };
