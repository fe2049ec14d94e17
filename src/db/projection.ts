import { sql } from "drizzle-orm";
import type { Projection } from "../room/outbox";
import type { Db } from "./conversations";
import { batchSql } from "./raw";

/**
 * Writes a room's projection into the directory, all or nothing, and only if it is newer than the one D1
 * has (each statement checks the version before the last one records it): a replayed or late projection
 * never moves the list back. Every participant's list entry takes the conversation's activity time.
 */
export async function applyProjection(db: Db, p: Projection): Promise<void> {
  const members = JSON.stringify(p.members);
  const newer = sql`(SELECT projected_version FROM conversations WHERE id = ${p.conversationId}) < ${p.version}`;
  await batchSql(db, [
    sql`
      DELETE FROM participants WHERE conversation_id = ${p.conversationId}
        AND user_id NOT IN (SELECT json_extract(value, '$.userId') FROM json_each(${members})) AND ${newer}`,
    sql`
      INSERT INTO participants (conversation_id, user_id, role, joined_at, last_read_seq, last_delivered_seq, activity_at)
      SELECT ${p.conversationId}, json_extract(value, '$.userId'), json_extract(value, '$.role'),
        json_extract(value, '$.joinedAt'), json_extract(value, '$.lastReadSeq'),
        json_extract(value, '$.lastDeliveredSeq'), ${p.updatedAt}
      FROM json_each(${members}) WHERE ${newer}
      ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role,
        last_read_seq = max(last_read_seq, excluded.last_read_seq),
        last_delivered_seq = max(last_delivered_seq, excluded.last_delivered_seq),
        activity_at = excluded.activity_at`,
    sql`
      UPDATE conversations SET title = ${p.title}, updated_at = ${p.updatedAt}, last_seq = ${p.lastSeq},
        last_message_sender_id = ${p.lastMessageSenderId}, last_message_preview = ${p.lastMessagePreview},
        last_message_at = ${p.lastMessageAt}, rev = ${p.version}, projected_version = ${p.version}
      WHERE id = ${p.conversationId} AND projected_version < ${p.version}`,
  ]);
}
