// The Worker's bindings and `[vars]` are `Cloudflare.Env`, generated from wrangler.toml into
// worker-configuration.d.ts by `npm run types` (`npm run typecheck` fails when it is out of date). Declared
// here is what wrangler.toml cannot say: the secrets, and the variables that are unset by default.
declare global {
  namespace Cloudflare {
    interface Env {
      AUTH_SECRET?: string;
      /** Signs socket tickets (src/tickets.ts); defaults to AUTH_SECRET, so a JWKS setup must set it. */
      TICKET_SECRET?: string;
      AUTH_JWKS_URL?: string;
      AUTH_ISSUER?: string;
      AUTH_AUDIENCE?: string;
      ALLOWED_ORIGINS?: string;
      /** Bench only: latency added to every D1 call (src/db/directory.ts). */
      D1_DELAY_MS?: string;
      /** Push notifications to participants who are away (src/push/); unset channels are not used. */
      PUSH_WEBHOOK_URL?: string;
      PUSH_WEBHOOK_SECRET?: string;
      VAPID_PUBLIC_KEY?: string;
      VAPID_PRIVATE_KEY?: string;
      VAPID_SUBJECT?: string;
      /** Comma-separated hosts of the push services endpoints may be on (src/push/config.ts has the default). */
      PUSH_SERVICE_HOSTS?: string;
      /** Subrequests one invocation of the push consumer may make. */
      PUSH_SUBREQUEST_BUDGET?: string;
    }
  }
}

/** Bindings and variables of the Worker, as wrangler.toml and secrets declare them. */
export type Env = Cloudflare.Env;

/** What a request handler can rely on after authentication. */
export interface AppEnv {
  Bindings: Env;
  Variables: { userId: string; limits: Limits };
}

export interface Limits {
  contentChars: number;
  contentBytes: number;
  titleChars: number;
  participants: number;
  pageSize: number;
  bodyBytes: number;
  frameBytes: number;
  sendBucketSize: number;
  sendRefillPerSecond: number;
  /** Read markers and typing changes, per user and conversation (REST and frames together). */
  signalBucketSize: number;
  signalRefillPerSecond: number;
  /** New conversations (a direct one found again counts too), per user. */
  createBucketSize: number;
  createRefillPerMinute: number;
  /** Participant changes (adding, removing, leaving), per user over all their conversations. */
  membershipBucketSize: number;
  membershipRefillPerMinute: number;
  socketsPerUser: number;
  replay: number;
  ticketTtlSeconds: number;
}

export const DEFAULT_LIMITS: Limits = {
  contentChars: 4000,
  contentBytes: 16 * 1024,
  titleChars: 200,
  participants: 100,
  pageSize: 100,
  bodyBytes: 64 * 1024,
  frameBytes: 32 * 1024,
  sendBucketSize: 20,
  sendRefillPerSecond: 5,
  signalBucketSize: 30,
  signalRefillPerSecond: 10,
  createBucketSize: 30,
  createRefillPerMinute: 20,
  membershipBucketSize: 30,
  membershipRefillPerMinute: 30,
  socketsPerUser: 10,
  replay: 1000,
  ticketTtlSeconds: 60,
};

const LIMIT_VARS: Record<keyof Limits, keyof Env> = {
  contentChars: "MAX_CONTENT_CHARS",
  contentBytes: "MAX_CONTENT_BYTES",
  titleChars: "MAX_TITLE_CHARS",
  participants: "MAX_PARTICIPANTS",
  pageSize: "MAX_PAGE_SIZE",
  bodyBytes: "MAX_BODY_BYTES",
  frameBytes: "MAX_FRAME_BYTES",
  sendBucketSize: "SEND_BUCKET_SIZE",
  sendRefillPerSecond: "SEND_REFILL_PER_SECOND",
  signalBucketSize: "SIGNAL_BUCKET_SIZE",
  signalRefillPerSecond: "SIGNAL_REFILL_PER_SECOND",
  createBucketSize: "CREATE_BUCKET_SIZE",
  createRefillPerMinute: "CREATE_REFILL_PER_MINUTE",
  membershipBucketSize: "MEMBERSHIP_BUCKET_SIZE",
  membershipRefillPerMinute: "MEMBERSHIP_REFILL_PER_MINUTE",
  socketsPerUser: "MAX_SOCKETS_PER_USER",
  replay: "MAX_REPLAY",
  ticketTtlSeconds: "TICKET_TTL_SECONDS",
};

/** Reads the limits from `[vars]`; a missing or non-positive value falls back to the contract's default. */
export function readLimits(env: Partial<Env>): Limits {
  const limits = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(LIMIT_VARS) as (keyof Limits)[]) {
    const raw = env[LIMIT_VARS[key]];
    const value = typeof raw === "string" ? Number(raw) : Number.NaN;
    if (Number.isFinite(value) && value > 0) limits[key] = value;
  }
  return limits;
}
