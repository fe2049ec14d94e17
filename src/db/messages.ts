import { and, asc, eq, gt } from "drizzle-orm";
import type { MessageRow } from "../domain/messages";
import type { Db } from "./conversations";
import { messages } from "./schema";

/** A message as version 0.1 stored it in D1, with the SHA-256 of its content as first sent. */
export type LegacyMessageRow = MessageRow & { sentHash: string | null };

/** A page of a conversation's 0.1 messages in D1, oldest first, after `after`: what a room imports. */
export async function legacyMessagesPage(
  db: Db,
  conversationId: string,
  after: number,
  limit: number,
): Promise<LegacyMessageRow[]> {
  return db
    .select({
      id: messages.id,
      conversationId: messages.conversationId,
      seq: messages.seq,
      senderId: messages.senderId,
      content: messages.content,
      localId: messages.localId,
      sentHash: messages.sentHash,
      createdAt: messages.createdAt,
      editedAt: messages.editedAt,
      deletedAt: messages.deletedAt,
    })
    .from(messages)
    .where(and(eq(messages.conversationId, conversationId), gt(messages.seq, after)))
    .orderBy(asc(messages.seq))
    .limit(limit);
}
