import { type ConversationRow, type ParticipantRow, preview } from "../domain/conversations";
import type { MessageRow } from "../domain/messages";

// The conversation's log in the room's SQLite: its row, participants with their markers, messages, and the
// outbox rows that each change writes in its own transaction. Every function takes the storage first; all
// of them are synchronous, so a read can never be overtaken by a commit.

/** Every write that needs the conversation's order, committed in groups, in arrival order. */
export type Write =
  | { kind: "send"; id: string; senderId: string; content: string; localId: string | null; now: number }
  | { kind: "edit"; actorId: string; seq: number; content: string; now: number }
  | { kind: "delete"; actorId: string; seq: number; now: number }
  | { kind: "read"; userId: string; seq: number };

/** What a write came to. Only `stored`, `changed` and a `read` that moved change anything. */
export type Outcome =
  | { kind: "stored"; message: MessageRow }
  /** The (sender, localId) exists already: a retry when its content as first sent is the same. */
  | { kind: "duplicate"; message: MessageRow; sentContent: string | null; sentHash: string | null }
  | { kind: "changed"; message: MessageRow }
  | { kind: "unchanged"; message: MessageRow }
  | { kind: "read"; participant: ParticipantRow; moved: boolean }
  | { kind: "refused"; code: "not_found" | "forbidden"; message: string };

/** The conversation's own row; the API's view adds the newest message's summary (`conversationRow`). */
export type RoomConversation = Omit<ConversationRow, "lastMessageSenderId" | "lastMessagePreview" | "lastMessageAt">;

export interface CommitResult {
  outcomes: Outcome[];
  /** Users whose delivered marker this commit moved (they have sockets that are sent the new messages). */
  delivered: string[];
  /** The conversation's rev after the commit; it grew when anything changed. */
  rev: number;
}

const MESSAGE_COLUMNS =
  "seq, id, sender_id AS senderId, content, local_id AS localId, created_at AS createdAt, edited_at AS editedAt, deleted_at AS deletedAt";
const PARTICIPANT_COLUMNS =
  "user_id AS userId, role, joined_at AS joinedAt, last_read_seq AS lastReadSeq, last_delivered_seq AS lastDeliveredSeq";

type Row = Record<string, SqlStorageValue>;

const rows = <T>(sql: SqlStorage, query: string, ...bindings: unknown[]): T[] =>
  sql.exec<Row>(query, ...bindings).toArray() as unknown as T[];

const first = <T>(sql: SqlStorage, query: string, ...bindings: unknown[]): T | null =>
  rows<T>(sql, query, ...bindings)[0] ?? null;

const withConversation =
  (conversationId: string) =>
  <T extends object>(row: T): T & { conversationId: string } => ({ ...row, conversationId });

// ---- Reads ----------------------------------------------------------------------------------------------

export function readConversation(sql: SqlStorage): RoomConversation | null {
  const row = first<Omit<RoomConversation, "direct"> & { direct: number }>(
    sql,
    `SELECT id, title, direct, created_by AS createdBy, created_at AS createdAt, updated_at AS updatedAt,
       last_seq AS lastSeq, rev FROM conversation LIMIT 1`,
  );
  return row ? { ...row, direct: row.direct === 1 } : null;
}

export function readParticipants(sql: SqlStorage, conversationId: string): ParticipantRow[] {
  return rows<Omit<ParticipantRow, "conversationId">>(
    sql,
    `SELECT ${PARTICIPANT_COLUMNS} FROM participants ORDER BY joined_at, user_id`,
  ).map(withConversation(conversationId));
}

export function readParticipant(sql: SqlStorage, conversationId: string, userId: string): ParticipantRow | null {
  const row = first<Omit<ParticipantRow, "conversationId">>(
    sql,
    `SELECT ${PARTICIPANT_COLUMNS} FROM participants WHERE user_id = ?`,
    userId,
  );
  return row ? withConversation(conversationId)(row) : null;
}

export const isParticipant = (sql: SqlStorage, userId: string) =>
  first(sql, "SELECT 1 AS one FROM participants WHERE user_id = ?", userId) !== null;

export const hasDeparted = (sql: SqlStorage, userId: string) =>
  first(sql, "SELECT 1 AS one FROM departed WHERE user_id = ?", userId) !== null;

export function messageBySeq(sql: SqlStorage, conversationId: string, seq: number): MessageRow | null {
  const row = first<Omit<MessageRow, "conversationId">>(
    sql,
    `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq = ?`,
    seq,
  );
  return row ? withConversation(conversationId)(row) : null;
}

/**
 * A page of history by keyset on seq (the primary key): `after` gives the oldest first, otherwise the newest
 * first (before `before` when given). One more row than asked says whether there is more.
 */
export function historyPage(
  sql: SqlStorage,
  conversationId: string,
  page: { before?: number | undefined; after?: number | undefined; limit: number },
): { rows: MessageRow[]; hasMore: boolean } {
  const found =
    page.after !== undefined
      ? rows<Omit<MessageRow, "conversationId">>(
          sql,
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`,
          page.after,
          page.limit + 1,
        )
      : rows<Omit<MessageRow, "conversationId">>(
          sql,
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?`,
          page.before ?? Number.MAX_SAFE_INTEGER,
          page.limit + 1,
        );
  return { rows: found.slice(0, page.limit).map(withConversation(conversationId)), hasMore: found.length > page.limit };
}

/** The conversation as the directory and the API show it: its row with the newest message's summary. */
export function conversationRow(sql: SqlStorage, conversation: RoomConversation): ConversationRow {
  const last = first<{ senderId: string; content: string; createdAt: number; deletedAt: number | null }>(
    sql,
    "SELECT sender_id AS senderId, content, created_at AS createdAt, deleted_at AS deletedAt FROM messages ORDER BY seq DESC LIMIT 1",
  );
  return {
    ...conversation,
    lastMessageSenderId: last?.senderId ?? null,
    lastMessagePreview: last ? (last.deletedAt === null ? preview(last.content) : "") : null,
    lastMessageAt: last?.createdAt ?? null,
  };
}

// ---- Commits --------------------------------------------------------------------------------------------

/** A new version of the conversation: its rev grows and the outbox says D1 has something to learn. */
function bump(sql: SqlStorage, now: number): number {
  const { rev } = sql.exec<{ rev: number }>("UPDATE conversation SET rev = rev + 1 RETURNING rev").one();
  queueOutbox(sql, rev, now);
  return rev;
}

const queueOutbox = (sql: SqlStorage, version: number, now: number) =>
  sql.exec("INSERT INTO outbox (version, at) VALUES (?, ?)", version, now);

/** The message a send's (sender, localId) names already: what a retry is answered with. */
function duplicateOf(sql: SqlStorage, conversationId: string, senderId: string, localId: string | null): Outcome {
  const existing = first<Omit<MessageRow, "conversationId"> & { sentContent: string | null; sentHash: string | null }>(
    sql,
    `SELECT ${MESSAGE_COLUMNS}, sent_content AS sentContent, sent_hash AS sentHash FROM messages
     WHERE sender_id = ? AND local_id = ?`,
    senderId,
    localId,
  );
  // Only the localId's index can refuse a send: seq follows the row read in this turn, ids are random.
  if (!existing) throw new Error("a send inserted nothing and names no message");
  const { sentContent, sentHash, ...message } = existing;
  return { kind: "duplicate", message: withConversation(conversationId)(message), sentContent, sentHash };
}

const refused = (code: "not_found" | "forbidden", message: string): Outcome => ({ kind: "refused", code, message });

/**
 * Commits a group of writes as one local transaction, in order. Sends get seqs lastSeq + 1, + 2, ...; a send
 * whose (sender, localId) exists inserts nothing, so no seq is skipped. `conversation` is its row as read in
 * the same turn, before the transaction. `online` are the users with sockets
 * that will be sent the new messages: their delivered markers move in the same transaction.
 */
export function commitGroup(
  storage: DurableObjectStorage,
  conversation: RoomConversation,
  writes: Write[],
  online: string[],
  now: number,
): CommitResult {
  return storage.transactionSync(() => {
    const { sql } = storage;
    const id = conversation.id;
    let lastSeq = conversation.lastSeq;
    let changed = false;
    const senders = new Map<string, number>();
    // Membership cannot change within a group: each sender is looked up once.
    const admitted = new Map<string, boolean>();
    const apply = (w: Write): Outcome => {
      switch (w.kind) {
        case "send": {
          if (!admitted.has(w.senderId)) admitted.set(w.senderId, isParticipant(sql, w.senderId));
          if (!admitted.get(w.senderId)) return refused("not_found", "Not found");
          // A (sender, localId) that exists inserts nothing: then it is a retry, or a reuse for other content.
          const inserted = sql.exec(
            "INSERT OR IGNORE INTO messages (seq, id, sender_id, content, local_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            lastSeq + 1,
            w.id,
            w.senderId,
            w.content,
            w.localId,
            w.now,
          ).rowsWritten;
          if (inserted === 0) return duplicateOf(sql, id, w.senderId, w.localId);
          lastSeq += 1;
          senders.set(w.senderId, lastSeq);
          changed = true;
          const message: MessageRow = {
            id: w.id,
            conversationId: id,
            seq: lastSeq,
            senderId: w.senderId,
            content: w.content,
            localId: w.localId,
            createdAt: w.now,
            editedAt: null,
            deletedAt: null,
          };
          return { kind: "stored", message };
        }
        case "edit":
        case "delete": {
          const actor = readParticipant(sql, id, w.actorId);
          const message = actor ? messageBySeq(sql, id, w.seq) : null;
          if (!actor || !message) return refused("not_found", "Not found");
          if (w.kind === "edit") {
            if (message.senderId !== w.actorId) return refused("forbidden", "Only the sender can edit a message");
            if (message.deletedAt !== null) return refused("forbidden", "A deleted message cannot be edited");
          } else {
            if (message.senderId !== w.actorId && actor.role !== "owner") {
              return refused("forbidden", "Only the sender or an owner can delete");
            }
            if (message.deletedAt !== null) return { kind: "unchanged", message };
          }
          const content = w.kind === "edit" ? w.content : "";
          // The content as first sent is kept once it changes, so that a retry of its localId stays a retry.
          sql.exec(
            `UPDATE messages SET sent_content = coalesce(sent_content, CASE WHEN local_id IS NOT NULL THEN content END),
               content = ?1, edited_at = CASE WHEN ?3 = 'edit' THEN ?2 ELSE edited_at END,
               deleted_at = CASE WHEN ?3 = 'delete' THEN ?2 ELSE deleted_at END
             WHERE seq = ?4`,
            content,
            w.now,
            w.kind,
            w.seq,
          );
          changed = true;
          const after: MessageRow =
            w.kind === "edit" ? { ...message, content, editedAt: w.now } : { ...message, content, deletedAt: w.now };
          return { kind: "changed", message: after };
        }
        case "read": {
          const before = readParticipant(sql, id, w.userId);
          if (!before) return refused("not_found", "Not found");
          // Markers only move forward, never past the last message; reading implies delivery.
          const target = Math.min(w.seq, lastSeq);
          if (before.lastReadSeq >= target && before.lastDeliveredSeq >= target) {
            return { kind: "read", participant: before, moved: false };
          }
          const participant = {
            ...before,
            lastReadSeq: Math.max(before.lastReadSeq, target),
            lastDeliveredSeq: Math.max(before.lastDeliveredSeq, target),
          };
          // The read receipt announces the delivered marker too.
          sql.exec(
            `UPDATE participants SET last_read_seq = ?1, last_delivered_seq = ?2,
               announced_delivered_seq = max(announced_delivered_seq, ?2) WHERE user_id = ?3`,
            participant.lastReadSeq,
            participant.lastDeliveredSeq,
            w.userId,
          );
          changed = true;
          return { kind: "read", participant, moved: true };
        }
      }
    };
    const outcomes = writes.map(apply);

    let delivered: string[] = [];
    if (senders.size > 0) {
      // Sending moves the sender's own markers to their newest message.
      for (const [senderId, seq] of senders) {
        sql.exec(
          `UPDATE participants SET last_read_seq = max(last_read_seq, ?1), last_delivered_seq = max(last_delivered_seq, ?1),
             announced_delivered_seq = max(announced_delivered_seq, ?1) WHERE user_id = ?2`,
          seq,
          senderId,
        );
      }
      delivered = moveDelivered(sql, online, lastSeq);
    }
    if (!changed) return { outcomes, delivered, rev: conversation.rev };
    // One statement for the new version and, when messages were stored, the new last seq.
    const rev = conversation.rev + 1;
    sql.exec(
      "UPDATE conversation SET rev = ?1, last_seq = ?2, updated_at = CASE WHEN ?4 THEN max(updated_at, ?3) ELSE updated_at END",
      rev,
      lastSeq,
      now,
      senders.size > 0 ? 1 : 0,
    );
    queueOutbox(sql, rev, now);
    return { outcomes, delivered, rev };
  });
}

/** Moves these users' delivered markers to `seq` (never back); returns those that moved. */
function moveDelivered(sql: SqlStorage, userIds: string[], seq: number): string[] {
  if (userIds.length === 0) return [];
  return rows<{ userId: string }>(
    sql,
    `UPDATE participants SET last_delivered_seq = ?1
     WHERE user_id IN (SELECT value FROM json_each(?2)) AND last_delivered_seq < ?1 RETURNING user_id AS userId`,
    seq,
    JSON.stringify(userIds),
  ).map((r) => r.userId);
}

/** After a replay to a socket of `userId`: their delivered marker moves to `seq`, as its own version. */
export function markDelivered(storage: DurableObjectStorage, userId: string, seq: number, now: number): boolean {
  return storage.transactionSync(() => {
    const moved = moveDelivered(storage.sql, [userId], seq).length > 0;
    if (moved) bump(storage.sql, now);
    return moved;
  });
}

/**
 * The delivered markers not yet announced, and for each the senders of the messages it newly covers: the
 * users shown delivered ticks. Read from storage, so that an eviction cannot lose an announcement.
 */
export function dueDeliveredReceipts(
  sql: SqlStorage,
  conversationId: string,
): { participant: ParticipantRow; senders: string[] }[] {
  const due = rows<Omit<ParticipantRow, "conversationId"> & { announced: number }>(
    sql,
    `SELECT ${PARTICIPANT_COLUMNS}, announced_delivered_seq AS announced FROM participants
     WHERE last_delivered_seq > announced_delivered_seq`,
  );
  return due.map(({ announced, ...p }) => ({
    participant: withConversation(conversationId)(p),
    senders: rows<{ senderId: string }>(
      sql,
      "SELECT DISTINCT sender_id AS senderId FROM messages WHERE seq > ? AND seq <= ? AND sender_id != ?",
      announced,
      p.lastDeliveredSeq,
      p.userId,
    ).map((r) => r.senderId),
  }));
}

export function markAnnounced(sql: SqlStorage, markers: ParticipantRow[]): void {
  for (const p of markers) {
    sql.exec(
      "UPDATE participants SET announced_delivered_seq = max(announced_delivered_seq, ?) WHERE user_id = ?",
      p.lastDeliveredSeq,
      p.userId,
    );
  }
}

// ---- Membership -----------------------------------------------------------------------------------------

export type NewConversation = Omit<RoomConversation, "rev"> & {
  /** The version to continue from: the directory's, for a conversation adopted from it (0.1 counted in D1). */
  rev?: number;
  members: Omit<ParticipantRow, "conversationId">[];
};

/** The conversation's first state in this room: new, or as the directory (or 0.1) had it. */
export function initConversation(storage: DurableObjectStorage, c: NewConversation, now: number): void {
  storage.transactionSync(() => {
    const { sql } = storage;
    sql.exec(
      `INSERT INTO conversation (id, title, direct, created_by, created_at, updated_at, last_seq, rev)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      c.id,
      c.title,
      c.direct ? 1 : 0,
      c.createdBy,
      c.createdAt,
      c.updatedAt,
      c.lastSeq,
      c.rev ?? 0,
    );
    for (const m of c.members) {
      sql.exec(
        `INSERT INTO participants (user_id, role, joined_at, last_read_seq, last_delivered_seq, announced_delivered_seq)
         VALUES (?, ?, ?, ?, ?, ?)`,
        m.userId,
        m.role,
        m.joinedAt,
        m.lastReadSeq,
        m.lastDeliveredSeq,
        m.lastDeliveredSeq,
      );
    }
    bump(sql, now);
  });
}

/**
 * Adds the users who are not participants yet, starting with their markers at the last message (history is
 * not unread to them). Refuses all of them when the conversation would then have more than `max`.
 */
export function addParticipants(
  storage: DurableObjectStorage,
  userIds: string[],
  max: number,
  now: number,
  /** Newcomers read from the last message on; one coming back (to a direct conversation) from where they left. */
  from: "now" | "where-they-left" = "now",
): { added: string[]; overLimit: boolean } {
  return storage.transactionSync(() => {
    const { sql } = storage;
    const newcomers = userIds.filter((u) => !isParticipant(sql, u));
    const count = sql.exec<{ n: number }>("SELECT count(*) AS n FROM participants").one().n;
    if (count + newcomers.length > max) return { added: [], overLimit: true };
    if (newcomers.length === 0) return { added: [], overLimit: false };
    const lastSeq = readConversation(sql)?.lastSeq ?? 0;
    for (const userId of newcomers) {
      const left =
        from === "where-they-left"
          ? first<{ seq: number | null }>(sql, "SELECT last_read_seq AS seq FROM departed WHERE user_id = ?", userId)
              ?.seq
          : null;
      sql.exec(
        `INSERT INTO participants (user_id, role, joined_at, last_read_seq, last_delivered_seq, announced_delivered_seq)
         VALUES (?1, 'member', ?2, ?3, ?3, ?3)`,
        userId,
        now,
        Math.min(left ?? lastSeq, lastSeq),
      );
      sql.exec("DELETE FROM departed WHERE user_id = ?", userId);
    }
    sql.exec("UPDATE conversation SET updated_at = max(updated_at, ?)", now);
    bump(sql, now);
    return { added: newcomers, overLimit: false };
  });
}

/** Removes a participant; when the last owner leaves, the longest-standing participant becomes owner. */
export function removeParticipant(storage: DurableObjectStorage, userId: string, now: number): boolean {
  return storage.transactionSync(() => {
    const { sql } = storage;
    const leaving = first<{ lastReadSeq: number }>(
      sql,
      "SELECT last_read_seq AS lastReadSeq FROM participants WHERE user_id = ?",
      userId,
    );
    if (!leaving) return false;
    sql.exec("DELETE FROM participants WHERE user_id = ?", userId);
    sql.exec(
      `UPDATE participants SET role = 'owner'
       WHERE user_id = (SELECT user_id FROM participants ORDER BY joined_at, user_id LIMIT 1)
         AND NOT EXISTS (SELECT 1 FROM participants WHERE role = 'owner')`,
    );
    const rev = bump(sql, now);
    sql.exec(
      "INSERT OR REPLACE INTO departed (user_id, at, rev, last_read_seq) VALUES (?, ?, ?, ?)",
      userId,
      now,
      rev,
      leaving.lastReadSeq,
    );
    return true;
  });
}
