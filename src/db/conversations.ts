import { and, asc, desc, eq, inArray, sql } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { ConversationRow, ListCursor, ParticipantRow } from "../domain/conversations";
import { batchSql } from "./raw";
import { conversations, participants } from "./schema";

export type Db = DrizzleD1Database<Record<string, never>> & { $client: D1Database };

const participantColumns = {
  conversationId: participants.conversationId,
  userId: participants.userId,
  role: participants.role,
  joinedAt: participants.joinedAt,
  lastReadSeq: participants.lastReadSeq,
  lastDeliveredSeq: participants.lastDeliveredSeq,
};

const conversationColumns = {
  id: conversations.id,
  title: conversations.title,
  direct: conversations.direct,
  createdBy: conversations.createdBy,
  createdAt: conversations.createdAt,
  updatedAt: conversations.updatedAt,
  lastSeq: conversations.lastSeq,
  lastMessageSenderId: conversations.lastMessageSenderId,
  lastMessagePreview: conversations.lastMessagePreview,
  lastMessageAt: conversations.lastMessageAt,
};

export interface ConversationWithMembers {
  conversation: ConversationRow;
  members: ParticipantRow[];
}

const membersOf = (db: Db, conversationId: string) =>
  db
    .select(participantColumns)
    .from(participants)
    .where(eq(participants.conversationId, conversationId))
    .orderBy(asc(participants.joinedAt), asc(participants.userId));

export async function findMembers(db: Db, conversationId: string): Promise<ParticipantRow[]> {
  return membersOf(db, conversationId);
}

export interface NewConversation {
  id: string;
  title: string | null;
  direct: boolean;
  directKey: string | null;
  createdBy: string;
  memberIds: string[];
  now: number;
}

/**
 * Creates the conversation and its participants atomically; the creator is the owner. The participants go
 * in as one JSON parameter, since a D1 statement takes at most 100 parameters.
 */
export async function insertConversation(db: Db, c: NewConversation): Promise<void> {
  await batchSql(db, [
    sql`INSERT INTO conversations (id, title, direct, direct_key, created_by, created_at, updated_at)
        VALUES (${c.id}, ${c.title}, ${c.direct ? 1 : 0}, ${c.directKey}, ${c.createdBy}, ${c.now}, ${c.now})`,
    sql`INSERT INTO participants (conversation_id, user_id, role, joined_at, activity_at)
        SELECT ${c.id}, j.value, CASE WHEN j.key = 0 THEN 'owner' ELSE 'member' END, ${c.now}, ${c.now}
        FROM json_each(${JSON.stringify([c.createdBy, ...c.memberIds])}) j`,
  ]);
}

export async function findDirectConversationId(db: Db, key: string): Promise<string | null> {
  const row = await db
    .select({ id: conversations.id })
    .from(conversations)
    .where(eq(conversations.directKey, key))
    .get();
  return row?.id ?? null;
}

/** The conversation and its participants, in one round trip; null when it is missing or `userId` is not in it. */
export async function findConversationFor(
  db: Db,
  conversationId: string,
  userId: string,
): Promise<ConversationWithMembers | null> {
  const [rows, members] = await db.batch([
    db.select(conversationColumns).from(conversations).where(eq(conversations.id, conversationId)),
    membersOf(db, conversationId),
  ]);
  const conversation = rows[0];
  if (!conversation || !members.some((m) => m.userId === userId)) return null;
  return { conversation, members };
}

export async function conversationExists(db: Db, conversationId: string): Promise<boolean> {
  const row = await db
    .select({ id: conversations.id })
    .from(conversations)
    .where(eq(conversations.id, conversationId))
    .get();
  return row !== undefined;
}

export async function findMembership(db: Db, conversationId: string, userId: string): Promise<ParticipantRow | null> {
  const row = await db
    .select(participantColumns)
    .from(participants)
    .where(and(eq(participants.conversationId, conversationId), eq(participants.userId, userId)))
    .get();
  return row ?? null;
}

/**
 * One page of a user's conversations, most recent activity first, with every participant of each, in one
 * round trip whatever the page size: the participants query selects its conversations by the same keyset.
 */
export async function listConversationsFor(
  db: Db,
  userId: string,
  limit: number,
  after: ListCursor | null,
): Promise<{ page: (ConversationWithMembers & { cursor: ListCursor })[]; hasMore: boolean }> {
  const mine = and(
    eq(participants.userId, userId),
    after
      ? sql`(${participants.activityAt}, ${participants.conversationId}) < (${after.activityAt}, ${after.conversationId})`
      : undefined,
  );
  const order = [desc(participants.activityAt), desc(participants.conversationId)];
  const pageIds = db
    .select({ id: participants.conversationId })
    .from(participants)
    .where(mine)
    .orderBy(...order)
    .limit(limit);
  const [rows, members] = await db.batch([
    db
      .select({ ...conversationColumns, activityAt: participants.activityAt })
      .from(participants)
      .innerJoin(conversations, eq(conversations.id, participants.conversationId))
      .where(mine)
      .orderBy(...order)
      .limit(limit + 1),
    db
      .select(participantColumns)
      .from(participants)
      .where(inArray(participants.conversationId, pageIds))
      .orderBy(asc(participants.joinedAt), asc(participants.userId)),
  ]);
  const byConversation = Map.groupBy(members, (m) => m.conversationId);
  const page = rows.slice(0, limit).map(({ activityAt, ...conversation }) => ({
    conversation,
    members: byConversation.get(conversation.id) ?? [],
    cursor: { activityAt, conversationId: conversation.id },
  }));
  return { page, hasMore: rows.length > limit };
}

/**
 * Adds the users who are not participants yet, all or none: one statement checks the participant limit
 * against the rows as they are when it runs, so concurrent additions cannot pass it together. New
 * participants start with their markers at the conversation's last message: history is not unread to them.
 */
export async function addParticipants(
  db: Db,
  conversationId: string,
  userIds: string[],
  maxParticipants: number,
  now: number,
): Promise<void> {
  const ids = JSON.stringify(userIds);
  const isNew = (alias: string) =>
    sql.raw(`NOT EXISTS (SELECT 1 FROM participants p WHERE p.conversation_id = c.id AND p.user_id = ${alias}.value)`);
  await batchSql(db, [
    sql`
      INSERT INTO participants (conversation_id, user_id, role, joined_at, last_read_seq, last_delivered_seq, activity_at)
      SELECT c.id, j.value, 'member', ${now}, c.last_seq, c.last_seq, ${now}
      FROM conversations c, json_each(${ids}) j
      WHERE c.id = ${conversationId} AND ${isNew("j")}
        AND (SELECT count(*) FROM participants p WHERE p.conversation_id = c.id)
          + (SELECT count(*) FROM json_each(${ids}) k WHERE ${isNew("k")}) <= ${maxParticipants}`,
    sql`UPDATE conversations SET updated_at = ${now} WHERE id = ${conversationId}`,
    sql`UPDATE participants SET activity_at = ${now} WHERE conversation_id = ${conversationId}`,
  ]);
}

/** Removes a participant; when the last owner leaves, the longest-standing participant becomes owner. */
export async function removeParticipant(db: Db, conversationId: string, userId: string): Promise<void> {
  await batchSql(db, [
    sql`DELETE FROM participants WHERE conversation_id = ${conversationId} AND user_id = ${userId}`,
    sql`
      UPDATE participants SET role = 'owner'
      WHERE conversation_id = ${conversationId}
        AND user_id = (SELECT user_id FROM participants WHERE conversation_id = ${conversationId}
                       ORDER BY joined_at, user_id LIMIT 1)
        AND NOT EXISTS (SELECT 1 FROM participants WHERE conversation_id = ${conversationId} AND role = 'owner')`,
  ]);
}

/** Re-adds a user to a direct conversation they had left. */
export async function rejoinDirect(db: Db, conversationId: string, userId: string, now: number): Promise<void> {
  await db.run(sql`
    INSERT INTO participants (conversation_id, user_id, role, joined_at, last_read_seq, last_delivered_seq, activity_at)
    SELECT id, ${userId}, 'member', ${now}, last_seq, last_seq, updated_at FROM conversations WHERE id = ${conversationId}
    ON CONFLICT DO NOTHING`);
}
