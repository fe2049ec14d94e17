// Pure rules of push notifications: collapsing, deferring, the payload, retries.

/** What a push says: the state of one conversation for one user, whatever number of messages it covers. */
export interface Notification {
  type: "messages";
  conversationId: string;
  title: string;
  body: string;
  /** Messages after the user's read marker, when the notification was made. */
  unreadCount: number;
  lastSeq: number;
  senderId: string | null;
  /** The newest message's first characters ("" once deleted). */
  preview: string;
  sentAt: string | null;
}

/** The conversation as a push check reads it. */
export interface PushConversation {
  id: string;
  title: string | null;
  lastSeq: number;
  lastMessageSenderId: string | null;
  lastMessagePreview: string | null;
  lastMessageAt: number | null;
}

/** The checks of one queue batch, collapsed: the highest seq asked for in each conversation. */
export function collapseChecks(checks: { conversationId: string; seq: number }[]): Map<string, number> {
  const highest = new Map<string, number>();
  for (const { conversationId, seq } of checks) {
    highest.set(conversationId, Math.max(highest.get(conversationId) ?? 0, seq));
  }
  return highest;
}

/**
 * Whether a check should leave the conversation to the check of a newer message: that one was scheduled
 * when its message was committed, has not come due yet, and will report everything this one would. This is
 * what collapses a burst of messages into one notification across queue batches.
 */
export function defersToNewer(conversation: PushConversation, seq: number, now: number, delaySeconds: number): boolean {
  return (
    conversation.lastSeq > seq &&
    conversation.lastMessageAt !== null &&
    conversation.lastMessageAt + delaySeconds * 1000 > now
  );
}

/** One notification for a user whose read marker is at `lastReadSeq`. */
export function buildNotification(conversation: PushConversation, lastReadSeq: number): Notification {
  const unreadCount = Math.max(0, conversation.lastSeq - lastReadSeq);
  const sender = conversation.lastMessageSenderId;
  const preview = conversation.lastMessagePreview ?? "";
  const latest = preview === "" ? "a deleted message" : sender ? `${sender}: ${preview}` : preview;
  return {
    type: "messages",
    conversationId: conversation.id,
    title: conversation.title ?? sender ?? "New messages",
    body: unreadCount > 1 ? `${unreadCount} new messages · ${latest}` : latest,
    unreadCount,
    lastSeq: conversation.lastSeq,
    senderId: sender,
    preview,
    sentAt: conversation.lastMessageAt === null ? null : new Date(conversation.lastMessageAt).toISOString(),
  };
}

/** A queue takes at most this many messages per `sendBatch`. */
export const QUEUE_BATCH = 100;

/**
 * How many of `planned` deliveries an invocation with `budget` subrequests left sends itself, at `cost`
 * each; the others (and the retries of those sent) go back to the queue, `QUEUE_BATCH` per call, which the
 * budget pays for first.
 */
export function inlineDeliveries(planned: number, budget: number, cost: number): number {
  const queueCalls = Math.ceil(planned / QUEUE_BATCH);
  return Math.max(0, Math.min(planned, Math.floor((budget - queueCalls) / cost)));
}

/** What a delivery's answer means. */
export type DeliveryOutcome = "sent" | "gone" | "retry" | "failed";

/**
 * A push service's or webhook's status: 2xx sent; 404 and 410 from a push service mean the subscription
 * expired or was removed (RFC 8030 §7.3); 408, 429 and 5xx are worth retrying; other 4xx are our fault or a
 * bad subscription and would fail again.
 */
export function classifyStatus(status: number, channel: "webpush" | "webhook"): DeliveryOutcome {
  if (status >= 200 && status < 300) return "sent";
  if (channel === "webpush" && (status === 404 || status === 410)) return "gone";
  if (status === 408 || status === 429 || status >= 500) return "retry";
  return "failed";
}

/** Delivery attempts per notification and channel, the first included. */
export const MAX_DELIVERY_ATTEMPTS = 5;

/** Seconds before attempt `next` (2, 3, ...): 10, 20, 40, 80..., at most 15 minutes; a Retry-After longer wins. */
export function retryDelaySeconds(next: number, retryAfterSeconds?: number): number {
  const backoff = Math.min(10 * 2 ** Math.max(0, next - 2), 900);
  return Math.max(backoff, Math.min(retryAfterSeconds ?? 0, 3600));
}

/** A Retry-After header in seconds (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}
