import type { VapidKeys } from "@block65/webcrypto-web-push";
import type { Env } from "../env";

/** How long after a message its push check runs, unless `PUSH_DELAY_SECONDS` says otherwise. */
export const DEFAULT_PUSH_DELAY_SECONDS = 10;
/** Cloudflare Queues delays a message by at most 12 hours. */
const MAX_QUEUE_DELAY_SECONDS = 43_200;

export interface PushConfig {
  delaySeconds: number;
  /** Web Push with these VAPID keys; null when a key or the subject is missing. */
  vapid: Required<{ [K in keyof VapidKeys]: string }> | null;
  /** The signed webhook; null unless both its URL and its secret are set. */
  webhook: { url: string; secret: string } | null;
}

/** Push settings from `[vars]` and secrets. Nothing is sent unless at least one channel is configured. */
export function readPushConfig(env: Partial<Env>): PushConfig {
  const raw = Number(env.PUSH_DELAY_SECONDS ?? Number.NaN);
  const delaySeconds =
    Number.isInteger(raw) && raw >= 0 ? Math.min(raw, MAX_QUEUE_DELAY_SECONDS) : DEFAULT_PUSH_DELAY_SECONDS;
  const { VAPID_PUBLIC_KEY: publicKey, VAPID_PRIVATE_KEY: privateKey, VAPID_SUBJECT: subject } = env;
  const vapid = publicKey && privateKey && subject ? { publicKey, privateKey, subject } : null;
  const { PUSH_WEBHOOK_URL: url, PUSH_WEBHOOK_SECRET: secret } = env;
  // An unsigned webhook would let anyone who finds the receiver forge notifications: send none instead.
  const webhook = url && secret ? { url, secret } : null;
  return { delaySeconds, vapid, webhook };
}

/** Whether committed messages should be checked for push at all. */
export function pushEnabled(env: Partial<Env>): boolean {
  if (!env.PUSH_QUEUE) return false;
  const config = readPushConfig(env);
  return config.vapid !== null || config.webhook !== null;
}
