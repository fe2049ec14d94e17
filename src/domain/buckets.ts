import { ApiError } from "../errors";

// Token buckets, the one shape of every abuse limit: sends, read markers and typing per user in a room; new
// conversations and participant changes per user in their inbox. Pure, so each Object keeps them in memory.

/** A token bucket: `tokens` left as of `at` (ms). */
export interface Bucket {
  tokens: number;
  at: number;
}

export interface BucketRule {
  size: number;
  refillPerSecond: number;
}

/** Takes one token if there is one; otherwise says how long until there will be. */
export function takeToken(
  bucket: Bucket | undefined,
  rule: BucketRule,
  now: number,
): { bucket: Bucket; allowed: true } | { bucket: Bucket; allowed: false; retryAfterMs: number } {
  const elapsed = bucket ? Math.max(0, now - bucket.at) : 0;
  const tokens = bucket ? Math.min(rule.size, bucket.tokens + (elapsed * rule.refillPerSecond) / 1000) : rule.size;
  if (tokens >= 1) return { bucket: { tokens: tokens - 1, at: now }, allowed: true };
  const retryAfterMs = Math.ceil(((1 - tokens) * 1000) / rule.refillPerSecond);
  return { bucket: { tokens, at: now }, allowed: false, retryAfterMs };
}

/** The error of an empty bucket: `429 rate_limited` with the wait (seconds) until a token is back. */
export const rateLimited = (message: string, retryAfterMs: number) =>
  new ApiError("rate_limited", message, undefined, retryAfterMs / 1000);

/** Buckets by key (a user, or a user and an action), all of one rule. */
export class Buckets {
  readonly #buckets = new Map<string, Bucket>();

  constructor(
    private readonly rule: BucketRule,
    /** What a refusal of `take` says, e.g. "Too many messages; slow down". */
    private readonly refusal = "Too many requests; slow down",
  ) {}

  /** Takes a token of `key`'s bucket: 0, or how long (ms) until there is one, when it is empty. */
  tryTake(key: string, now: number): number {
    const taken = takeToken(this.#buckets.get(key), this.rule, now);
    this.#buckets.set(key, taken.bucket);
    return taken.allowed ? 0 : taken.retryAfterMs;
  }

  /** Takes a token of `key`'s bucket, or throws `rate_limited` saying when to come back. */
  take(key: string, now: number): void {
    const waitMs = this.tryTake(key, now);
    if (waitMs > 0) throw rateLimited(this.refusal, waitMs);
  }
}

/** Rate-limited frames of one socket (sends, read markers, typing) within the window that close it (4429). */
export const ABUSE_STRIKES = 50;
export const ABUSE_WINDOW_MS = 10_000;

/** A socket's refusals: `count` of them since `since` (ms). */
export interface Strikes {
  count: number;
  since: number;
}

/**
 * Counts one more refusal. Accepted read markers and typing changes do not wipe the count: buckets refill, so
 * a flood is accepted now and then, and must still be closed after its first 50 refusals; a client refused now
 * and then starts again from zero once a window has passed. (The room wipes it on an accepted send, so that a
 * client pacing its outbox by `retryAfterMs` is never closed.)
 */
export function strike(strikes: Strikes | undefined, now: number): { strikes: Strikes; abusive: boolean } {
  const fresh = !strikes || now - strikes.since >= ABUSE_WINDOW_MS;
  const next = fresh ? { count: 1, since: now } : { count: strikes.count + 1, since: strikes.since };
  return { strikes: next, abusive: next.count >= ABUSE_STRIKES };
}
