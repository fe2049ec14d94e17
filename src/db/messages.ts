import { and, asc, desc, eq, gt, inArray, lt, type SQL, sql } from "drizzle-orm";
import type { ParticipantRow } from "../domain/conversations";
import type { MessageRow } from "../domain/messages";
import type { Db } from "./conversations";
import { messages } from "./schema";

/** Every write that needs the conversation's order. The room commits them in groups, in arrival order. */
export type Write =
  | {
      kind: "send";
      id: string;
      senderId: string;
      content: string;
      localId: string | null;
      /** contentHash(content) when there is a localId, to recognise retries later; the commit loop adds it. */
      sentHash?: string | null;
      now: number;
    }
  | { kind: "edit"; actorId: string; seq: number; content: string; now: number }
  | { kind: "delete"; actorId: string; seq: number; now: number }
  | { kind: "read"; userId: string; seq: number }
  /** Several users' delivered markers (user → seq), flushed together: one statement, however many users. */
  | { kind: "delivered"; markers: Record<string, number> };

/**
 * What a write changed: the message or participant row after it, or null when it changed nothing (its
 * conditions did not hold, or a marker would not have moved); for `delivered`, the rows whose marker moved.
 */
export type Outcome = MessageRow | ParticipantRow | ParticipantRow[] | null;

const PARTICIPANT_RETURNING = sql.raw(
  `RETURNING conversation_id AS conversationId, user_id AS userId, role, joined_at AS joinedAt,
   last_read_seq AS lastReadSeq, last_delivered_seq AS lastDeliveredSeq`,
);
const MESSAGE_RETURNING = sql.raw(
  `RETURNING id, conversation_id AS conversationId, seq, sender_id AS senderId, content, local_id AS localId,
   created_at AS createdAt, edited_at AS editedAt, deleted_at AS deletedAt`,
);
const isParticipant = (conversationId: string, userId: string | SQL) =>
  sql`EXISTS (SELECT 1 FROM participants WHERE conversation_id = ${conversationId} AND user_id = ${userId})`;

type Send = Extract<Write, { kind: "send" }>;

/** The sends of a group share INSERT statements of at most this much JSON (D1 takes strings up to 2 MB). */
const INSERT_JSON_CHARS = 100_000;

/**
 * One atomic D1 batch for a group of writes, and how to read each write's outcome from its results.
 *
 * The group's sends are inserted together, in order, and `seq` is given out here, inside the batch: the
 * conversation's highest seq plus the row's rank among the rows actually inserted, so seqs are gap-free
 * whatever is skipped. A send whose (sender, localId) exists already, or comes again later in the group, or
 * whose sender is no longer a participant, inserts nothing. The caller must not run two groups at once.
 */
export function planCommit(conversationId: string, writes: Write[], options: { listUnread?: boolean } = {}) {
  const statements: SQL[] = [];
  /** Per write, the statement whose first row is its outcome; sends are found by id in `inserts`. */
  const slots: number[] = [];
  const push = (statement: SQL) => statements.push(statement) - 1;
  let inserts: number[] | undefined;

  for (const w of writes) {
    switch (w.kind) {
      case "send":
        inserts ??= insertSends(
          conversationId,
          writes.filter((x): x is Send => x.kind === "send"),
        ).map(push);
        slots.push(-1);
        break;
      case "edit":
        slots.push(
          push(
            sql`
              UPDATE messages SET content = ${w.content}, edited_at = ${w.now}
              WHERE conversation_id = ${conversationId} AND seq = ${w.seq} AND sender_id = ${w.actorId}
                AND deleted_at IS NULL AND ${isParticipant(conversationId, w.actorId)}
              ${MESSAGE_RETURNING}`,
          ),
        );
        break;
      case "delete":
        slots.push(
          push(
            sql`
              UPDATE messages SET content = '', deleted_at = coalesce(deleted_at, ${w.now})
              WHERE conversation_id = ${conversationId} AND seq = ${w.seq} AND ${isParticipant(conversationId, w.actorId)}
                AND (sender_id = ${w.actorId} OR EXISTS (SELECT 1 FROM participants
                  WHERE conversation_id = ${conversationId} AND user_id = ${w.actorId} AND role = 'owner'))
              ${MESSAGE_RETURNING}`,
          ),
        );
        break;
      case "read":
        // Markers only move forward, never past the last message; reading implies delivery.
        slots.push(
          push(
            sql`
              UPDATE participants SET
                last_read_seq = max(last_read_seq, min(${w.seq}, c.last_seq)),
                last_delivered_seq = max(last_delivered_seq, min(${w.seq}, c.last_seq))
              FROM (SELECT last_seq FROM conversations WHERE id = ${conversationId}) AS c
              WHERE conversation_id = ${conversationId} AND user_id = ${w.userId}
                AND (last_read_seq < min(${w.seq}, c.last_seq) OR last_delivered_seq < min(${w.seq}, c.last_seq))
              ${PARTICIPANT_RETURNING}`,
          ),
        );
        break;
      case "delivered":
        // The markers travel as one JSON object, so that a thousand users still make one statement.
        slots.push(
          push(
            sql`
              UPDATE participants SET last_delivered_seq = max(last_delivered_seq, min(m.seq, c.last_seq))
              FROM (SELECT last_seq FROM conversations WHERE id = ${conversationId}) AS c,
                (SELECT key AS uid, value AS seq FROM json_each(${JSON.stringify(w.markers)})) AS m
              WHERE conversation_id = ${conversationId} AND user_id = m.uid
                AND last_delivered_seq < min(m.seq, c.last_seq)
              ${PARTICIPANT_RETURNING}`,
          ),
        );
        break;
    }
  }

  const sends = writes.filter((w) => w.kind === "send");
  if (sends.length > 0 || writes.some((w) => w.kind === "edit" || w.kind === "delete")) {
    statements.push(refreshLastMessage(conversationId));
  }
  if (sends.length > 0) {
    const now = Math.max(...sends.map((s) => s.now));
    statements.push(
      sql`UPDATE conversations SET updated_at = ${now} WHERE id = ${conversationId}`,
      sql`UPDATE participants SET activity_at = ${now} WHERE conversation_id = ${conversationId}`,
    );
    // Sending moves the sender's own markers to their newest message.
    for (const [senderId, own] of Map.groupBy(sends, (s) => s.senderId)) {
      const ids = sql.join(
        own.map((s) => sql`${s.id}`),
        sql`, `,
      );
      statements.push(
        sql`
          UPDATE participants SET last_read_seq = max(last_read_seq, s.seq),
            last_delivered_seq = max(last_delivered_seq, s.seq)
          FROM (SELECT max(seq) AS seq FROM messages WHERE id IN (${ids})) AS s
          WHERE conversation_id = ${conversationId} AND user_id = ${senderId} AND s.seq IS NOT NULL`,
      );
    }
  }

  // For push notifications: who, after this batch, has not read up to the conversation's last message.
  const unreadSlot =
    sends.length > 0 && options.listUnread
      ? push(sql`
          SELECT user_id AS userId FROM participants
          WHERE conversation_id = ${conversationId}
            AND last_read_seq < (SELECT last_seq FROM conversations WHERE id = ${conversationId})`)
      : -1;

  const outcomes = (results: unknown[][]): Outcome[] => {
    const inserted = new Map(
      (inserts ?? []).flatMap((slot) => (results[slot] ?? []) as MessageRow[]).map((r) => [r.id, r]),
    );
    return writes.map((w, i) => {
      if (w.kind === "send") return inserted.get(w.id) ?? null;
      const rows = (results[slots[i] ?? -1] ?? []) as (MessageRow | ParticipantRow)[];
      return w.kind === "delivered" ? (rows as ParticipantRow[]) : (rows[0] ?? null);
    });
  };
  return {
    statements,
    outcomes,
    /**
     * When the batch stored at least one message and `listUnread` was asked for: the highest seq it stored
     * and the participants who have not read up to it. Null otherwise.
     */
    unread: (results: unknown[][]): UnreadAfterCommit | null => {
      if (unreadSlot < 0) return null;
      const stored = outcomes(results).flatMap((o, i) =>
        writes[i]?.kind === "send" && o ? [(o as MessageRow).seq] : [],
      );
      if (stored.length === 0) return null;
      const rows = (results[unreadSlot] ?? []) as { userId: string }[];
      return { seq: Math.max(...stored), userIds: rows.map((r) => r.userId) };
    },
  };
}

/**
 * A group's sends as few multi-row inserts (one, unless their content is large), each row numbered after the
 * rows before it. A (sender, localId) that comes again later in the group is left out: like a retry of a
 * stored message, it inserts nothing, and the room answers it with the original.
 */
function insertSends(conversationId: string, sends: Send[]): SQL[] {
  const seen = new Set<string>();
  const chunks: string[][] = [];
  let size = Number.POSITIVE_INFINITY;
  for (const w of sends) {
    if (w.localId !== null) {
      const key = JSON.stringify([w.senderId, w.localId]);
      if (seen.has(key)) continue;
      seen.add(key);
    }
    const row = JSON.stringify([w.id, w.senderId, w.content, w.localId, w.sentHash ?? null, w.now]);
    if (size + row.length > INSERT_JSON_CHARS) {
      chunks.push([]);
      size = 0;
    }
    chunks[chunks.length - 1]?.push(row);
    size += row.length;
  }
  const field = (n: number) => sql.raw(`json_extract(s.value, '$[${n}]')`);
  return chunks.map(
    (rows) => sql`
      INSERT INTO messages (id, conversation_id, seq, sender_id, content, local_id, sent_hash, created_at)
      SELECT ${field(0)}, ${conversationId},
        coalesce((SELECT seq FROM messages WHERE conversation_id = ${conversationId} ORDER BY seq DESC LIMIT 1), 0)
          + row_number() OVER (ORDER BY s.key),
        ${field(1)}, ${field(2)}, ${field(3)}, ${field(4)}, ${field(5)}
      FROM json_each(${`[${rows.join(",")}]`}) AS s
      WHERE ${isParticipant(conversationId, field(1))}
        AND NOT EXISTS (SELECT 1 FROM messages
          WHERE conversation_id = ${conversationId} AND sender_id = ${field(1)} AND local_id = ${field(3)})
      ${MESSAGE_RETURNING}`,
  );
}

export interface UnreadAfterCommit {
  seq: number;
  userIds: string[];
}

/** The conversation's last_seq and last-message fields, from its newest message (a tombstone previews as ""). */
function refreshLastMessage(conversationId: string): SQL {
  return sql`
    UPDATE conversations SET last_seq = m.seq, last_message_sender_id = m.sender_id,
      last_message_preview = CASE WHEN m.deleted_at IS NULL THEN substr(m.content, 1, 140) ELSE '' END,
      last_message_at = m.created_at
    FROM (SELECT seq, sender_id, content, created_at, deleted_at FROM messages
          WHERE conversation_id = ${conversationId} ORDER BY seq DESC LIMIT 1) AS m
    WHERE conversations.id = ${conversationId}`;
}

const messageColumns = {
  id: messages.id,
  conversationId: messages.conversationId,
  seq: messages.seq,
  senderId: messages.senderId,
  content: messages.content,
  localId: messages.localId,
  createdAt: messages.createdAt,
  editedAt: messages.editedAt,
  deletedAt: messages.deletedAt,
};

export async function findMessageByLocalId(
  db: Db,
  conversationId: string,
  senderId: string,
  localId: string,
): Promise<(MessageRow & { sentHash: string | null }) | null> {
  const row = await db
    .select({ ...messageColumns, sentHash: messages.sentHash })
    .from(messages)
    .where(
      and(eq(messages.conversationId, conversationId), eq(messages.senderId, senderId), eq(messages.localId, localId)),
    )
    .get();
  return row ?? null;
}

export async function findMessagesByIds(db: Db, ids: string[]): Promise<MessageRow[]> {
  return db.select(messageColumns).from(messages).where(inArray(messages.id, ids));
}

export async function findMessageBySeq(db: Db, conversationId: string, seq: number): Promise<MessageRow | null> {
  const row = await db
    .select(messageColumns)
    .from(messages)
    .where(and(eq(messages.conversationId, conversationId), eq(messages.seq, seq)))
    .get();
  return row ?? null;
}

/**
 * A page of history by keyset on seq: `after` gives the oldest first, otherwise the newest first (before
 * `before` when given). One more row than asked says whether there is more.
 */
export async function historyPage(
  db: Db,
  conversationId: string,
  page: { before?: number; after?: number; limit: number },
): Promise<{ rows: MessageRow[]; hasMore: boolean }> {
  const forward = page.after !== undefined;
  const rows = await db
    .select(messageColumns)
    .from(messages)
    .where(
      and(
        eq(messages.conversationId, conversationId),
        page.after !== undefined ? gt(messages.seq, page.after) : undefined,
        page.before !== undefined ? lt(messages.seq, page.before) : undefined,
      ),
    )
    .orderBy(forward ? asc(messages.seq) : desc(messages.seq))
    .limit(page.limit + 1);
  return { rows: rows.slice(0, page.limit), hasMore: rows.length > page.limit };
}
