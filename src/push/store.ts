import { and, asc, desc, eq, inArray, notInArray, sql } from "drizzle-orm";
import type { Db } from "../db/conversations";
import { pushSubscriptions } from "../db/schema";

// Storage of push subscriptions. Every function takes the database first.

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

/** The user's subscription with this endpoint; null when it was deleted or now belongs to someone else. */
export async function findSubscription(db: Db, userId: string, endpoint: string): Promise<SubscriptionRow | null> {
  const row = await db
    .select(subscriptionColumns)
    .from(pushSubscriptions)
    .where(and(eq(pushSubscriptions.endpoint, endpoint), eq(pushSubscriptions.userId, userId)))
    .get();
  return row ?? null;
}
