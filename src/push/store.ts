import { and, asc, desc, eq, inArray, lt, notInArray, sql } from "drizzle-orm";
import type { Db } from "../db/conversations";
import { conversations, participants, pushSubscriptions } from "../db/schema";
import type { PushConversation } from "./notification";

// Storage of push subscriptions and the reads of a push check. Every function takes the database first.

/** A user keeps at most this many subscriptions (browsers, devices); a new one pushes out the oldest. */
export const MAX_SUBSCRIPTIONS_PER_USER = 20;

export interface SubscriptionRow {
  endpoint: string;
  userId: string;
  p256dh: string;
  auth: string;
}

/**
 * Stores a subscription for `userId`. The endpoint is the key: the same endpoint again replaces its keys,
 * and an endpoint stored for another user moves to this one (a browser's subscription belongs to whoever
 * signed in on it last).
 */
export async function saveSubscription(db: Db, subscription: SubscriptionRow, now: number): Promise<void> {
  const { endpoint, userId, p256dh, auth } = subscription;
  const newest = db
    .select({ endpoint: pushSubscriptions.endpoint })
    .from(pushSubscriptions)
    .where(eq(pushSubscriptions.userId, userId))
    .orderBy(desc(pushSubscriptions.createdAt), desc(pushSubscriptions.endpoint))
    .limit(MAX_SUBSCRIPTIONS_PER_USER);
  await db.batch([
    db
      .insert(pushSubscriptions)
      .values({ endpoint, userId, p256dh, auth, createdAt: now })
      .onConflictDoUpdate({
        target: pushSubscriptions.endpoint,
        set: { userId, p256dh, auth, createdAt: now },
      }),
    db
      .delete(pushSubscriptions)
      .where(and(eq(pushSubscriptions.userId, userId), notInArray(pushSubscriptions.endpoint, newest))),
  ]);
}

/** Deletes the user's subscription with this endpoint; someone else's, or none, is left as it is. */
export async function deleteSubscription(db: Db, userId: string, endpoint: string): Promise<void> {
  await db
    .delete(pushSubscriptions)
    .where(and(eq(pushSubscriptions.endpoint, endpoint), eq(pushSubscriptions.userId, userId)));
}

/** Deletes a subscription its push service called gone, unless it was saved again with new keys meanwhile. */
export async function deleteGoneSubscription(db: Db, endpoint: string, p256dh: string): Promise<void> {
  await db
    .delete(pushSubscriptions)
    .where(and(eq(pushSubscriptions.endpoint, endpoint), eq(pushSubscriptions.p256dh, p256dh)));
}

const subscriptionColumns = {
  endpoint: pushSubscriptions.endpoint,
  userId: pushSubscriptions.userId,
  p256dh: pushSubscriptions.p256dh,
  auth: pushSubscriptions.auth,
};

/** Every subscription of these users (at most 100 of them: a conversation's participants). */
export async function findSubscriptions(db: Db, userIds: string[]): Promise<SubscriptionRow[]> {
  if (userIds.length === 0) return [];
  return db
    .select(subscriptionColumns)
    .from(pushSubscriptions)
    .where(inArray(pushSubscriptions.userId, sql`(SELECT value FROM json_each(${JSON.stringify(userIds)}))`))
    .orderBy(asc(pushSubscriptions.userId), asc(pushSubscriptions.createdAt));
}

export interface PushCheckRead {
  conversation: PushConversation;
  /** Participants whose read marker is before the checked message. */
  unread: { userId: string; lastReadSeq: number }[];
}

/** The conversation and who has not read up to `seq`, in one round trip; null when it no longer exists. */
export async function findUnread(db: Db, conversationId: string, seq: number): Promise<PushCheckRead | null> {
  const [rows, unread] = await db.batch([
    db
      .select({
        id: conversations.id,
        title: conversations.title,
        lastSeq: conversations.lastSeq,
        lastMessageSenderId: conversations.lastMessageSenderId,
        lastMessagePreview: conversations.lastMessagePreview,
        lastMessageAt: conversations.lastMessageAt,
      })
      .from(conversations)
      .where(eq(conversations.id, conversationId)),
    db
      .select({ userId: participants.userId, lastReadSeq: participants.lastReadSeq })
      .from(participants)
      .where(and(eq(participants.conversationId, conversationId), lt(participants.lastReadSeq, seq))),
  ]);
  const conversation = rows[0];
  return conversation ? { conversation, unread } : null;
}

/**
 * What a retried delivery needs to know again: the user's read marker (null when they left) and, for a Web
 * Push, their subscription with that endpoint (null when it was deleted or now belongs to someone else).
 */
export async function findRetryState(
  db: Db,
  conversationId: string,
  userId: string,
  endpoint: string | null,
): Promise<{ lastReadSeq: number | null; subscription: SubscriptionRow | null }> {
  const [member, subscription] = await db.batch([
    db
      .select({ lastReadSeq: participants.lastReadSeq })
      .from(participants)
      .where(and(eq(participants.conversationId, conversationId), eq(participants.userId, userId))),
    db
      .select(subscriptionColumns)
      .from(pushSubscriptions)
      .where(and(eq(pushSubscriptions.endpoint, endpoint ?? ""), eq(pushSubscriptions.userId, userId))),
  ]);
  return { lastReadSeq: member[0]?.lastReadSeq ?? null, subscription: subscription[0] ?? null };
}
