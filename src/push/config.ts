import type { VapidKeys } from "@block65/webcrypto-web-push";
import type { Env } from "../env";

/** How long after a message its push check runs, unless `PUSH_DELAY_SECONDS` says otherwise. */
export const DEFAULT_PUSH_DELAY_SECONDS = 10;
/** Cloudflare Queues delays a message by at most 12 hours. */
const MAX_QUEUE_DELAY_SECONDS = 43_200;

/**
 * The hosts of the browsers' push services (Chrome and Edge's FCM, Firefox's, Safari's, Windows'): a Web Push
 * endpoint must be one of them or under one, so that nobody can make the service POST to a host they choose.
 */
export const DEFAULT_PUSH_SERVICE_HOSTS = [
  "fcm.googleapis.com",
  "push.services.mozilla.com",
  "push.apple.com",
  "notify.windows.com",
];
/** Subrequests one invocation of the consumer may make (Workers Paid allows far more; Free allows 50). */
export const DEFAULT_PUSH_SUBREQUEST_BUDGET = 500;

export interface PushConfig {
  delaySeconds: number;
  /** Web Push endpoints are taken only on these hosts and their subdomains (`PUSH_SERVICE_HOSTS`). */
  serviceHosts: string[];
  /** What one consumer invocation may spend on subrequests (`PUSH_SUBREQUEST_BUDGET`); the rest waits. */
  subrequestBudget: number;
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
  const hosts = (env.PUSH_SERVICE_HOSTS ?? "")
    .split(",")
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h !== "");
  const budget = Number(env.PUSH_SUBREQUEST_BUDGET ?? Number.NaN);
  return {
    delaySeconds,
    vapid,
    webhook,
    serviceHosts: hosts.length > 0 ? hosts : DEFAULT_PUSH_SERVICE_HOSTS,
    subrequestBudget: Number.isInteger(budget) && budget > 0 ? budget : DEFAULT_PUSH_SUBREQUEST_BUDGET,
  };
}

/** Whether an endpoint is an https URL of a known push service: one of its hosts, or a subdomain of one. */
export function isPushService(config: PushConfig, endpoint: string): boolean {
  if (!URL.canParse(endpoint)) return false;
  const url = new URL(endpoint);
  if (url.protocol !== "https:") return false;
  const host = url.hostname.toLowerCase();
  return config.serviceHosts.some((allowed) => host === allowed || host.endsWith(`.${allowed}`));
}

/** Whether committed messages should be checked for push at all. */
export function pushEnabled(env: Partial<Env>): boolean {
  if (!env.PUSH_QUEUE) return false;
  const config = readPushConfig(env);
  return config.vapid !== null || config.webhook !== null;
}
