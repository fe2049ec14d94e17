import { DurableObject } from "cloudflare:workers";
import type { Db } from "../db/conversations";
import { directory } from "../db/directory";
import { applyProjection } from "../db/projection";
import { Buckets, type Strikes, strike } from "../domain/buckets";
import { canRemoveParticipant, type ParticipantRow, toConversation, toParticipant } from "../domain/conversations";
import { feedSpacingMs, type InboxChange } from "../domain/inbox";
import { catchUpPlan, contentHash, DELIVERED_FLUSH_MS, IDLE_SOCKET_MS, toMessage } from "../domain/messages";
import type { Env, Limits } from "../env";
import { readLimits } from "../env";
import { ApiError, type ErrorCode, errorJson, notFound, toApiError, validationFailed } from "../errors";
import { pushEnabled } from "../push/config";
import type { PushConversation } from "../push/notification";
import { schedulePushCheck } from "../push/tasks";
import {
  type ClientFrame,
  type ConversationDto,
  type MessageDto,
  type MessageSchemas,
  messageSchemasFor,
  type ParticipantDto,
  type ServerFrame,
} from "../schemas";
import { issueTicket, redeemTicket } from "../storage/tickets";
import { adoptFromDirectory } from "./adopt";
import { Sockets } from "./fanout";
import {
  addParticipants,
  type CommitResult,
  commitGroup,
  conversationRow,
  dueDeliveredReceipts,
  hasDeparted,
  historyPage,
  initConversation,
  isParticipant,
  markAnnounced,
  markDelivered,
  type NewConversation,
  type Outcome,
  type RoomConversation,
  readConversation,
  readParticipant,
  readParticipants,
  removeParticipant,
  type Write,
} from "./log";
import {
  delivered,
  failed,
  inboxesBehind,
  inboxesFed,
  inboxFeed,
  nextLaggingAt,
  PUMP_COALESCE_MS,
  projectionOf,
  settleInboxes,
  waitingVersion,
} from "./outbox";
import { Typing } from "./presence";
import { Receipts } from "./receipts";
import { migrate } from "./schema";

/** What an RPC to the room returns: errors travel as values, so the Worker can answer with their code. */
export type RoomResult<T> =
  | { ok: true; value: T }
  | { ok: false; error: { code: ErrorCode; message: string; details?: unknown; retryAfter?: number } };

interface Pending {
  write: Write;
  origin: WebSocket | undefined;
  resolve: (outcome: Outcome) => void;
  reject: (error: ApiError) => void;
}

/** At most this many writes share one local transaction. */
const MAX_GROUP = 128;
/** After a feed of the inboxes failed for a reason other than a call (a bug): when to try again. */
const FEED_RETRY_MS = 30_000;
/** While sockets are open, the room wakes at least this often to find dead ones. */
const SWEEP_MS = 60_000;

const ok = <T>(value: T): RoomResult<T> => ({ ok: true, value });
const fail = (error: ApiError): RoomResult<never> => ({
  ok: false,
  error: { code: error.code, message: error.message, details: error.details, retryAfter: error.retryAfter },
});

/**
 * One conversation, and the system of record of it: its SQLite holds the conversation, its participants
 * with their markers and its messages. Every ordered write commits there in one local transaction per group,
 * then is acked and broadcast; the outbox carries each change to the directory (D1), off the ack path.
 * The class reads as its lifecycle: waking, connecting, socket events, RPCs, the commit loop, the alarm.
 */
export class ConversationRoom extends DurableObject<Env> {
  /** The directory; a field so that a test can put a failing one in its place. */
  db: Db;
  /** A member's inbox, by user id; a field, as `db`, for tests of failing deliveries. */
  inboxOf: (userId: string) => { deliver(changes: InboxChange[]): Promise<void> };
  readonly #limits: Limits;
  readonly #sql: SqlStorage;
  readonly #sockets: Sockets;
  readonly #typing: Typing;
  readonly #receipts: Receipts;
  #frameSchemas: MessageSchemas | undefined;
  #pending: Pending[] = [];
  #draining = false;
  #adopting: Promise<boolean> | undefined;
  /** The conversation's row is here (it is never deleted): the send path then skips reading it first. */
  #exists = false;
  #pumping: Promise<void> | undefined;
  /** Not before this time after a failed pump (backoff). */
  #pumpNotBefore = 0;
  #feeding: Promise<void> | undefined;
  /** Not before this time: the spacing after a feed of the inboxes (or a delay after a bug in one). */
  #feedNotBefore = 0;
  #alarmAt: number | null = null;
  /** Abuse limits per user: sends; read markers and typing changes (which fan out to every socket too). */
  readonly #sends: Buckets;
  readonly #signals: Buckets;
  #strikes = new WeakMap<WebSocket, Strikes>();

  // ---- Waking -------------------------------------------------------------------------------------------

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.db = directory(env);
    this.inboxOf = (userId) => env.INBOXES.getByName(userId);
    this.#limits = readLimits(env);
    this.#sends = new Buckets(
      { size: this.#limits.sendBucketSize, refillPerSecond: this.#limits.sendRefillPerSecond },
      "Too many messages; slow down",
    );
    this.#signals = new Buckets(
      { size: this.#limits.signalBucketSize, refillPerSecond: this.#limits.signalRefillPerSecond },
      "Too many read markers and typing changes; slow down",
    );
    this.#sql = ctx.storage.sql;
    migrate(ctx.storage);
    this.#sockets = new Sockets(
      ctx,
      (userId) => isParticipant(this.#sql, userId),
      (userId) => this.#gone(userId),
    );
    this.#typing = new Typing(ctx.storage.kv);
    this.#receipts = new Receipts(this.#sockets);
    // `ping` is answered by the runtime, without waking the room.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
    void ctx.blockConcurrencyWhile(async () => {
      this.#alarmAt = await ctx.storage.getAlarm();
    });
  }

  /** The conversation's id: the room's name, or (woken by an alarm without one) as its row says. */
  get conversationId(): string {
    return this.ctx.id.name ?? readConversation(this.#sql)?.id ?? "";
  }

  /** The conversation, adopted from the directory on first use; null when there is no such conversation. */
  async #open(): Promise<RoomConversation | null> {
    const conversation = readConversation(this.#sql);
    if (conversation) {
      this.#exists = true;
      return conversation;
    }
    this.#adopting ??= adoptFromDirectory(this.ctx.storage, this.db, this.conversationId).finally(() => {
      this.#adopting = undefined;
    });
    await this.#adopting;
    return readConversation(this.#sql);
  }

  /**
   * Lets a participant through, `not_found` for anyone else (as for a conversation that does not exist),
   * without reading the conversation's row once it is known to be here: the check of every write.
   */
  async #admit(userId: string): Promise<void> {
    if (!this.#exists && !(await this.#open())) throw notFound();
    if (!isParticipant(this.#sql, userId)) throw notFound();
  }

  /** The conversation, for a participant; `not_found` for anyone else, as for a conversation that does not exist. */
  async #openFor(userId: string): Promise<RoomConversation> {
    const conversation = await this.#open();
    if (!conversation || !isParticipant(this.#sql, userId)) throw notFound();
    return conversation;
  }

  // ---- Connecting ---------------------------------------------------------------------------------------

  /** The WebSocket upgrade, forwarded by the Worker after it authenticated the user. */
  override async fetch(request: Request): Promise<Response> {
    const userId = request.headers.get("X-User-Id") ?? "";
    const since = Number(request.headers.get("X-Since") ?? "-1");
    let conversation: RoomConversation;
    try {
      conversation = await this.#openFor(userId);
    } catch (err) {
      return errorJson(toApiError(err));
    }
    if (this.#sockets.ofUser(userId).length >= this.#limits.socketsPerUser) {
      const message = `At most ${this.#limits.socketsPerUser} sockets per user and conversation`;
      return errorJson(new ApiError("rate_limited", message, undefined, 5));
    }

    const { 0: client, 1: server } = new WebSocketPair();
    const wasOnline = this.#sockets.ofUser(userId).length > 0;
    this.#sockets.accept(server, userId);
    const now = Date.now();
    this.#sockets.sendTo(server, {
      type: "ready",
      conversationId: conversation.id,
      userId,
      lastSeq: conversation.lastSeq,
      participants: readParticipants(this.#sql, conversation.id).map(toParticipant),
      online: this.#sockets.online(),
      typing: this.#typing.users(now),
    });
    // Without `since`, the client has everything up to `ready`'s lastSeq from REST.
    this.#catchUp(server, userId, conversation, since >= 0 ? since : conversation.lastSeq);
    if (!wasOnline) this.#sockets.broadcast({ type: "presence", userId, online: true }, { exceptUser: userId });
    this.#wakeAt(now + SWEEP_MS);
    return new Response(null, { status: 101, webSocket: client });
  }

  /**
   * Sends what the socket missed, or `resync` past the replay limit, in one synchronous pass over local
   * storage: no commit, ack or other frame can come between `ready` and the end of the replay.
   */
  #catchUp(ws: WebSocket, userId: string, conversation: RoomConversation, since: number): void {
    const plan = catchUpPlan(since, conversation.lastSeq, this.#limits.replay);
    if (plan === "none") return;
    if (plan === "resync") {
      this.#sockets.sendTo(ws, { type: "resync", fromSeq: since });
      return;
    }
    const { rows } = historyPage(this.#sql, conversation.id, { after: since, limit: this.#limits.replay });
    for (const row of rows) this.#sockets.sendTo(ws, { type: "message", message: toMessage(row) });
    const last = rows.at(-1)?.seq;
    if (last !== undefined && markDelivered(this.ctx.storage, userId, last, Date.now())) this.#changed(true);
  }

  // ---- Socket events ------------------------------------------------------------------------------------

  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    const attachment = this.#sockets.get(ws);
    // A socket closed from here (removed, abusive, idle) has nothing more to say.
    if (!attachment) return;
    if (typeof data !== "string") return this.#sockets.close(ws, 1003, "binary frames are not accepted");
    if (data.length > this.#limits.frameBytes / 3 && byteLength(data) > this.#limits.frameBytes) {
      return this.#sockets.close(ws, 1009, `frames are limited to ${this.#limits.frameBytes} bytes`);
    }
    this.#sockets.touch(ws, attachment);

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
        // A client that waits out each refusal's retryAfterMs is refused once per message at most: fine.
        this.#strikes.delete(ws);
        // A new message was acked by the commit loop, in order; a retry gets its original here.
        if (result.value.status === 200) {
          this.#sockets.sendTo(ws, { type: "ack", localId: frame.localId, message: result.value.message });
        }
        return;
      }
      case "typing": {
        const result = await this.#signal(userId, ws, () => this.#setTyping(userId, frame.typing));
        if (!result.ok) this.#refuse(ws, toError(result));
        return;
      }
      case "read": {
        const result = await this.#markRead(userId, frame.seq, ws);
        if (!result.ok) this.#refuse(ws, toError(result));
        return;
      }
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#sockets.forget(ws);
    // Complete the closing handshake, or the client never sees its close event.
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.#sockets.forget(ws);
  }

  // ---- RPC from the Worker ------------------------------------------------------------------------------

  /**
   * The conversation's first state, right after the Worker put it into the directory; answered with the
   * state it has when it exists already (a retried create).
   */
  async create(input: Omit<NewConversation, "updatedAt" | "lastSeq">): Promise<RoomResult<ConversationDto>> {
    return this.#rpc(async () => {
      if (!readConversation(this.#sql)) {
        initConversation(this.ctx.storage, { ...input, updatedAt: input.createdAt, lastSeq: 0 }, Date.now());
        this.#changed(false);
      }
      return this.#view(await this.#openFor(input.createdBy), input.createdBy);
    });
  }

  async conversation(input: { userId: string }): Promise<RoomResult<ConversationDto>> {
    return this.#rpc(async () => this.#view(await this.#openFor(input.userId), input.userId));
  }

  async history(input: {
    userId: string;
    before?: number | undefined;
    after?: number | undefined;
    limit: number;
  }): Promise<RoomResult<{ messages: MessageDto[]; hasMore: boolean }>> {
    return this.#rpc(async () => {
      const conversation = await this.#openFor(input.userId);
      const page = historyPage(this.#sql, conversation.id, input);
      return { messages: page.rows.map(toMessage), hasMore: page.hasMore };
    });
  }

  async sendMessage(input: {
    senderId: string;
    content: string;
    localId: string | null;
  }): Promise<RoomResult<{ status: 200 | 201; message: MessageDto }>> {
    return this.#send(input.senderId, input.content, input.localId, undefined);
  }

  async editMessage(input: { actorId: string; seq: number; content: string }): Promise<RoomResult<MessageDto>> {
    return this.#changeMessage({ kind: "edit", ...input, now: Date.now() });
  }

  async deleteMessage(input: { actorId: string; seq: number }): Promise<RoomResult<MessageDto>> {
    return this.#changeMessage({ kind: "delete", ...input, now: Date.now() });
  }

  async markRead(input: { userId: string; seq: number }): Promise<RoomResult<ParticipantDto>> {
    return this.#markRead(input.userId, input.seq, undefined);
  }

  async setTyping(input: { userId: string; typing: boolean }): Promise<RoomResult<null>> {
    return this.#signal(input.userId, undefined, () => {
      this.#setTyping(input.userId, input.typing);
      return null;
    });
  }

  async issueTicket(input: { userId: string }): Promise<RoomResult<{ ticket: string; expiresAt: number }>> {
    return this.#rpc(async () => {
      await this.#admit(input.userId);
      return issueTicket(this.#sql, input.userId, this.#limits.ticketTtlSeconds, Date.now());
    });
  }

  /** The user a ticket was issued to, once. */
  async redeemTicket(ticket: string): Promise<string | null> {
    if (!readConversation(this.#sql)) return null;
    return redeemTicket(this.#sql, ticket, Date.now());
  }

  /** Adds participants (owner only), in the room's commit order; D1 has them before this returns. */
  async addParticipants(input: { actorId: string; userIds: string[] }): Promise<RoomResult<ConversationDto>> {
    return this.#rpc(async () => {
      const conversation = await this.#openFor(input.actorId);
      if (readParticipant(this.#sql, conversation.id, input.actorId)?.role !== "owner") {
        throw new ApiError("forbidden", "Only an owner can add participants");
      }
      if (conversation.direct) throw new ApiError("forbidden", "A direct conversation has exactly two participants");
      const { added, overLimit } = addParticipants(
        this.ctx.storage,
        input.userIds,
        this.#limits.participants,
        Date.now(),
      );
      if (overLimit) {
        throw new ApiError("validation_failed", "The request is not valid", [
          { path: "userIds", message: `a conversation has at most ${this.#limits.participants} participants` },
        ]);
      }
      if (added.length > 0) await this.#membershipChanged([]);
      return this.#view(await this.#openFor(input.actorId), input.actorId);
    });
  }

  /** A user of a direct conversation's pair comes back to it (creating it again finds it). */
  async rejoinDirect(input: { userId: string }): Promise<RoomResult<ConversationDto>> {
    return this.#rpc(async () => {
      const conversation = await this.#open();
      if (!conversation?.direct) throw notFound();
      const { added } = addParticipants(this.ctx.storage, [input.userId], 2, Date.now(), "where-they-left");
      if (added.length > 0) await this.#membershipChanged([]);
      return this.#view(await this.#openFor(input.userId), input.userId);
    });
  }

  /**
   * Removes a participant (an owner removes others; anyone leaves). The removed user's sockets are closed
   * with 4403 in the commit's turn, before anything else is broadcast. Repeated, it answers as the first
   * time and repairs what the first could not finish (D1's membership).
   */
  async removeParticipant(input: { actorId: string; userId: string }): Promise<RoomResult<null>> {
    return this.#rpc(async () => {
      const conversation = await this.#open();
      if (!conversation) throw notFound();
      const actor = readParticipant(this.#sql, conversation.id, input.actorId);
      const again = hasDeparted(this.#sql, input.userId) && !isParticipant(this.#sql, input.userId);
      if (again && (input.actorId === input.userId || actor?.role === "owner")) {
        await this.#pumpNow();
        return null;
      }
      if (!actor || !isParticipant(this.#sql, input.userId)) throw notFound();
      if (!canRemoveParticipant(input.actorId, actor.role, input.userId, conversation.direct)) {
        const message = conversation.direct
          ? "In a direct conversation each participant can only leave"
          : "Only an owner can remove other participants";
        throw new ApiError("forbidden", message);
      }
      removeParticipant(this.ctx.storage, input.userId, Date.now());
      await this.#membershipChanged([input.userId]);
      return null;
    });
  }

  /** The users with a socket open here right now; the push consumer sends nothing to them. */
  async onlineUserIds(): Promise<string[]> {
    return this.#sockets.online();
  }

  /** What a push check of message `seq` needs: the conversation, who has not read it, who is connected. */
  async pushCheck(input: { seq: number }): Promise<{
    conversation: PushConversation;
    unread: { userId: string; lastReadSeq: number }[];
    online: string[];
  } | null> {
    const conversation = await this.#open();
    if (!conversation) return null;
    const row = conversationRow(this.#sql, conversation);
    return {
      conversation: row,
      unread: readParticipants(this.#sql, conversation.id)
        .filter((p) => p.lastReadSeq < input.seq)
        .map((p) => ({ userId: p.userId, lastReadSeq: p.lastReadSeq })),
      online: this.#sockets.online(),
    };
  }

  // ---- Writes -------------------------------------------------------------------------------------------

  async #send(
    senderId: string,
    content: string,
    localId: string | null,
    origin: WebSocket | undefined,
  ): Promise<RoomResult<{ status: 200 | 201; message: MessageDto }>> {
    return this.#rpc(async () => {
      // Checked again in the commit, in order with removals; here so that a stranger never meets the limiter.
      // An open socket is a participant's (a removal closes it in its own turn): it needs no check here.
      if (!origin) await this.#admit(senderId);
      const now = Date.now();
      this.#sends.take(senderId, now);
      const outcome = await this.#commit(
        { kind: "send", id: crypto.randomUUID(), senderId, content, localId, now },
        origin,
      );
      switch (outcome.kind) {
        case "stored":
          return { status: 201 as const, message: toMessage(outcome.message) };
        case "duplicate": {
          // Compared with the content as first sent: an edit or a delete since does not make a retry a reuse.
          const same =
            outcome.sentContent !== null || outcome.sentHash === null
              ? (outcome.sentContent ?? outcome.message.content) === content
              : outcome.sentHash === (await contentHash(content));
          if (!same) throw new ApiError("idempotency_conflict", "This localId was used for other content");
          return { status: 200 as const, message: toMessage(outcome.message) };
        }
        default:
          throw refusal(outcome);
      }
    });
  }

  async #changeMessage(write: Extract<Write, { kind: "edit" | "delete" }>): Promise<RoomResult<MessageDto>> {
    return this.#rpc(async () => {
      await this.#admit(write.actorId);
      const outcome = await this.#commit(write, undefined);
      if (outcome.kind === "changed" || outcome.kind === "unchanged") return toMessage(outcome.message);
      throw refusal(outcome);
    });
  }

  async #markRead(userId: string, seq: number, origin: WebSocket | undefined): Promise<RoomResult<ParticipantDto>> {
    return this.#signal(userId, origin, async () => {
      const outcome = await this.#commit({ kind: "read", userId, seq }, origin);
      if (outcome.kind === "read") return toParticipant(outcome.participant);
      throw refusal(outcome);
    });
  }

  /**
   * A read marker or a typing change, within the user's bucket of them: each fans out to every socket, so a
   * flood must not reach the commit loop or the others. Admitted as a send is: a socket is a participant's.
   */
  async #signal<T>(userId: string, origin: WebSocket | undefined, run: () => T | Promise<T>): Promise<RoomResult<T>> {
    return this.#rpc(async () => {
      if (!origin) await this.#admit(userId);
      this.#signals.take(userId, Date.now());
      return run();
    });
  }

  #setTyping(userId: string, typing: boolean): void {
    const now = Date.now();
    // Refreshes are silent: only a change of state is broadcast.
    if (this.#typing.set(userId, typing, now)) {
      this.#sockets.broadcast({ type: "typing", userId, typing }, { exceptUser: userId });
    }
    const next = this.#typing.nextExpiry();
    if (next !== null) this.#wakeAt(next);
  }

  // ---- The commit loop ----------------------------------------------------------------------------------

  /** Queues a write for the commit loop; resolves once it is committed and announced. */
  #commit(write: Write, origin: WebSocket | undefined): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ write, origin, resolve, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  /**
   * One local transaction at a time, each holding everything that arrived while the one before was being
   * made durable (group commit). Acks and broadcasts follow in the group's order, so every socket sees seq
   * ascending; the output gate holds them until the transaction is durable.
   */
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#pending.length > 0) {
        const group = this.#pending.splice(0, MAX_GROUP);
        let result: CommitResult;
        try {
          const conversation = readConversation(this.#sql);
          if (!conversation) throw notFound();
          result = commitGroup(
            this.ctx.storage,
            conversation,
            group.map((p) => p.write),
            this.#sockets.online(),
            Date.now(),
          );
        } catch (err) {
          const error = toApiError(err);
          if (error.code === "internal") console.error("commit failed", err);
          for (const p of group) p.reject(error);
          continue;
        }
        group.forEach((p, i) => {
          const outcome = result.outcomes[i] as Outcome;
          try {
            this.#announce(p, outcome);
          } catch (err) {
            console.error("announce failed", err);
          }
          p.resolve(outcome);
        });
        this.#afterCommit(result);
        // Let what arrives meanwhile gather into the next group.
        await this.ctx.storage.sync();
      }
    } catch (err) {
      console.error("commit loop failed", err);
    } finally {
      this.#draining = false;
      if (this.#pending.length > 0) void this.#drain();
    }
  }

  /** Tells the sockets what a committed write changed. */
  #announce({ write, origin }: Pending, outcome: Outcome): void {
    switch (outcome.kind) {
      case "stored": {
        const message = toMessage(outcome.message);
        this.#sockets.broadcast({ type: "message", message }, { except: origin });
        if (origin && write.kind === "send" && write.localId) {
          this.#sockets.sendTo(origin, { type: "ack", localId: write.localId, message });
        }
        // A sent message ends its sender's typing.
        if (this.#typing.has(outcome.message.senderId)) this.#setTyping(outcome.message.senderId, false);
        return;
      }
      case "changed":
        this.#sockets.broadcast({ type: "message_updated", message: toMessage(outcome.message) });
        return;
      case "read":
        if (!outcome.moved) return;
        // Newer than any delivered receipt of this user still due, which must not follow it.
        this.#receipts.cancel(outcome.participant.userId);
        this.#sockets.broadcast(receipt(outcome.participant), { except: origin });
        return;
      default:
        return;
    }
  }

  #afterCommit(result: CommitResult): void {
    const stored = result.outcomes.filter((o) => o.kind === "stored");
    this.#changed(result.delivered.length > 0);
    if (stored.length > 0) this.#schedulePush(stored.at(-1)?.message.seq ?? 0);
  }

  /** Something was committed: D1 and the inboxes learn it within the coalescing delay, delivered receipts in 1 s. */
  #changed(deliveredMoved: boolean): void {
    const now = Date.now();
    this.#wakeAt(Math.max(now + PUMP_COALESCE_MS, this.#pumpNotBefore));
    this.#wakeAt(Math.max(now + PUMP_COALESCE_MS, this.#feedNotBefore));
    if (deliveredMoved) this.#wakeAt(now + DELIVERED_FLUSH_MS);
  }

  /** Schedules a push check of committed messages, unless everyone who has not read them has a socket here. */
  #schedulePush(seq: number): void {
    if (!pushEnabled(this.env)) return;
    const online = new Set(this.#sockets.online());
    const unread = readParticipants(this.#sql, this.conversationId).filter((p) => p.lastReadSeq < seq);
    if (unread.every((p) => online.has(p.userId))) return;
    // Not awaited: acks and broadcasts never wait for, or fail with, push notifications.
    this.ctx.waitUntil(schedulePushCheck(this.env, { conversationId: this.conversationId, seq }));
  }

  /** After a membership change: close the removed users' sockets, tell the rest, and update D1 before answering. */
  async #membershipChanged(removed: string[]): Promise<void> {
    for (const userId of removed) {
      for (const ws of this.#sockets.ofUser(userId)) this.#sockets.close(ws, 4403, "removed from the conversation");
    }
    const participants = readParticipants(this.#sql, this.conversationId).map(toParticipant);
    this.#sockets.broadcast({ type: "participants", participants });
    this.#changed(false);
    await this.#pumpNow();
  }

  // ---- The outbox pump, delivered receipts, typing and dead sockets: the alarm ---------------------------

  override async alarm(): Promise<void> {
    this.#alarmAt = null;
    const now = Date.now();
    for (const userId of this.#typing.expired(now)) this.#setTyping(userId, false);
    for (const [ws, attachment] of this.#sockets.all()) {
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      if (Math.max(attachment.lastSeenAt, pinged) + IDLE_SOCKET_MS <= now) {
        this.#sockets.close(ws, 1000, "no frame or ping for too long");
      }
    }
    this.#announceDelivered();
    await Promise.all([
      now >= this.#pumpNotBefore ? this.#pump() : undefined,
      now >= this.#feedNotBefore ? this.#feedInboxes() : undefined,
    ]);

    const later = Date.now() + PUMP_COALESCE_MS;
    const typing = this.#typing.nextExpiry();
    if (typing !== null) this.#wakeAt(typing);
    if (waitingVersion(this.#sql) !== null) this.#wakeAt(Math.max(later, this.#pumpNotBefore));
    if (inboxesBehind(this.#sql)) this.#wakeAt(Math.max(later, this.#feedNotBefore));
    const lagging = nextLaggingAt(this.#sql);
    if (lagging !== null) this.#wakeAt(Math.max(lagging, this.#feedNotBefore));
    if (this.#sockets.all().size > 0) this.#wakeAt(Date.now() + SWEEP_MS);
  }

  /** Delivered markers not announced yet go to the senders of the messages they cover, a few at a time. */
  #announceDelivered(): void {
    const due = dueDeliveredReceipts(this.#sql, this.conversationId);
    if (due.length === 0) return;
    for (const { participant, senders } of due) this.#receipts.queue(receipt(participant), participant.userId, senders);
    markAnnounced(
      this.#sql,
      due.map((d) => d.participant),
    );
  }

  /** Sends D1 the conversation as it stands, if it has something to learn; on failure, backs off. */
  #pump(): Promise<void> {
    this.#pumping ??= (async () => {
      try {
        const conversation = readConversation(this.#sql);
        if (!conversation || waitingVersion(this.#sql) === null) return;
        await applyProjection(this.db, projectionOf(this.#sql, conversation));
        delivered(this.#sql, conversation.rev);
        this.#pumpNotBefore = 0;
      } catch (err) {
        console.error("outbox pump failed", err);
        this.#pumpNotBefore = failed(this.#sql, Date.now());
        this.#wakeAt(this.#pumpNotBefore);
      } finally {
        this.#pumping = undefined;
      }
    })();
    return this.#pumping;
  }

  /**
   * Tells every member's inbox the conversation as it stands, and those who left that they did, for all the
   * versions since the last feed at once: a busy room calls each inbox at most once per coalescing delay, and
   * a room of many members less often (feedSpacingMs). An inbox whose call fails lags on its own and is tried
   * again with backoff, with whatever is current then; the others are not held back.
   */
  #feedInboxes(): Promise<void> {
    this.#feeding ??= (async () => {
      try {
        const conversation = readConversation(this.#sql);
        if (!conversation) return;
        const started = Date.now();
        const feed = inboxFeed(this.#sql, conversation, started);
        if (!feed) return;
        // Every call settles before the next feed can start.
        const { deliveries } = feed;
        const results = await Promise.allSettled(deliveries.map((d) => this.inboxOf(d.userId).deliver([d.change])));
        const refused = new Set<string>();
        results.forEach((r, i) => {
          if (r.status === "fulfilled") return;
          console.error("inbox delivery failed", r.reason);
          refused.add(deliveries[i]?.userId ?? "");
        });
        const took = deliveries.map((d) => d.userId).filter((u) => !refused.has(u));
        this.ctx.storage.transactionSync(() => {
          if (feed.version !== null) inboxesFed(this.#sql, feed.version);
          settleInboxes(this.#sql, took, refused, Date.now());
        });
        if (feed.version !== null) this.#feedNotBefore = started + feedSpacingMs(deliveries.length, PUMP_COALESCE_MS);
      } catch (err) {
        // Not a failed call (those lag above): a bug. Try again later rather than in a loop.
        console.error("inbox feed failed", err);
        this.#feedNotBefore = Date.now() + FEED_RETRY_MS;
      } finally {
        this.#feeding = undefined;
      }
    })();
    return this.#feeding;
  }

  /** Pumps now, after any pump in flight (which may have read the state before the change to send). */
  async #pumpNow(): Promise<void> {
    while (this.#pumping) await this.#pumping;
    await this.#pump();
  }

  #wakeAt(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  // ---- Helpers ------------------------------------------------------------------------------------------

  #view(conversation: RoomConversation, userId: string): ConversationDto {
    return toConversation(
      conversationRow(this.#sql, conversation),
      readParticipants(this.#sql, conversation.id),
      userId,
    );
  }

  async #rpc<T>(run: () => Promise<T>): Promise<RoomResult<T>> {
    try {
      return ok(await run());
    } catch (err) {
      const error = toApiError(err);
      if (error.code === "internal") console.error("room call failed", err);
      return fail(error);
    }
  }

  /** A user's last socket is gone: they are offline and no longer typing. */
  #gone(userId: string): void {
    if (this.#typing.has(userId)) this.#setTyping(userId, false);
    this.#sockets.broadcast({ type: "presence", userId, online: false });
  }

  /**
   * A refused frame: an error frame. A socket refused by its buckets 50 times within 10 s (none of them
   * followed by an accepted send) is closed for abuse.
   */
  #refuse(ws: WebSocket, error: ApiError, ref?: string): void {
    const frame: ServerFrame = { type: "error", code: error.code, message: error.message };
    if (ref !== undefined) frame.ref = ref;
    if (error.code === "rate_limited" && error.retryAfter !== undefined)
      frame.retryAfterMs = Math.ceil(error.retryAfter * 1000);
    this.#sockets.sendTo(ws, frame);
    if (error.code !== "rate_limited") return;
    const { strikes, abusive } = strike(this.#strikes.get(ws), Date.now());
    this.#strikes.set(ws, strikes);
    if (abusive) this.#sockets.close(ws, 4429, "too many rate-limited frames");
  }

  #schemas(): MessageSchemas {
    this.#frameSchemas ??= messageSchemasFor(this.#limits);
    return this.#frameSchemas;
  }
}

const receipt = (p: ParticipantRow): ServerFrame => ({
  type: "receipt",
  userId: p.userId,
  lastReadSeq: p.lastReadSeq,
  lastDeliveredSeq: p.lastDeliveredSeq,
});

const refusal = (outcome: Outcome) =>
  outcome.kind === "refused" ? new ApiError(outcome.code, outcome.message) : new ApiError("internal", "Internal error");

const byteLength = (text: string) => new TextEncoder().encode(text).byteLength;

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
