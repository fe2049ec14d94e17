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
  rev: conversations.rev,
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

/** The directory's entry of a conversation and its participants, in one round trip; null when missing. */
export async function findDirectoryEntry(db: Db, conversationId: string): Promise<ConversationWithMembers | null> {
  const [rows, members] = await db.batch([
    db.select(conversationColumns).from(conversations).where(eq(conversations.id, conversationId)),
    membersOf(db, conversationId),
  ]);
  const conversation = rows[0];
  return conversation ? { conversation, members } : null;
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
 * Every conversation of a user with its participants, as the directory has them, a page of 100 per round
 * trip and at most `maxPages` pages: what a user's inbox starts from when it is first used.
 */
export async function allConversationsOf(db: Db, userId: string, maxPages: number): Promise<ConversationWithMembers[]> {
  const all: ConversationWithMembers[] = [];
  let after: ListCursor | null = null;
  for (let page = 0; page < maxPages; page++) {
    const { page: entries, hasMore } = await listConversationsFor(db, userId, 100, after);
    all.push(...entries.map(({ conversation, members }) => ({ conversation, members })));
    const last = entries.at(-1);
    if (!hasMore || !last) break;
    after = last.cursor;
  }
  return all;
}
