import { cors } from "hono/cors";
import { createMiddleware } from "hono/factory";
import type { AppEnv, Env } from "../env";

/** The configured origin allow-list, or null when every origin is allowed. */
export function allowedOrigins(env: Env): string[] | null {
  const list = (env.ALLOWED_ORIGINS ?? "")
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  return list.length > 0 ? list : null;
}

export function isOriginAllowed(env: Env, origin: string | undefined): boolean {
  const list = allowedOrigins(env);
  // No Origin: not a browser, so not a cross-site request (wscat, servers, mobile apps).
  return list === null || origin === undefined || list.includes(origin);
}

/** CORS for browsers: any origin by default, only the listed ones when ALLOWED_ORIGINS is set. */
export const corsForOrigins = createMiddleware<AppEnv>((c, next) =>
  cors({
    origin: (origin) => (isOriginAllowed(c.env, origin) ? origin : null),
    allowHeaders: ["Authorization", "Content-Type"],
    allowMethods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    maxAge: 600,
  })(c, next),
);
