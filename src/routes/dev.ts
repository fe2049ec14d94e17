import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { SignJWT } from "jose";
import type { AppEnv, Env } from "../env";
import { ApiError, notFound, validationFailed } from "../errors";
import { UserId } from "../schemas";

/**
 * `DEV_AUTH` is set only in `.dev.vars` (written by `npm start`) and by the browser tests, never in
 * wrangler.toml: without it, and without a secret to sign with, the route does not exist (the usual 404).
 */
type DevEnv = Env & { DEV_AUTH?: string };

const TOKEN_TTL_SECONDS = 24 * 60 * 60;
const MAX_BODY_CHARS = 1024;
const TokenRequest = z.strictObject({ userId: UserId });

export function devAuthEnabled(env: DevEnv): boolean {
  const flag = env.DEV_AUTH?.trim().toLowerCase();
  // A token signed with AUTH_SECRET is of no use when tokens are verified with a JWKS.
  return !!flag && flag !== "0" && flag !== "false" && !!env.AUTH_SECRET && !env.AUTH_JWKS_URL;
}

/** `POST /dev/token {"userId"}` → `{token}`: sign-in by name for the demo page on a development machine. */
export function devRoutes(app: OpenAPIHono<AppEnv>): void {
  // Not an OpenAPI route on purpose: it is no part of the contract.
  app.post("/dev/token", async (c) => {
    const env = c.env as DevEnv;
    if (!devAuthEnabled(env)) throw notFound();
    const text = await c.req.text();
    if (text.length > MAX_BODY_CHARS) throw new ApiError("payload_too_large", "The body is too large");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ApiError("validation_failed", "Malformed JSON");
    }
    const parsed = TokenRequest.safeParse(json);
    if (!parsed.success) throw validationFailed(parsed.error);
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(parsed.data.userId)
      .setIssuedAt(now)
      .setExpirationTime(now + TOKEN_TTL_SECONDS);
    if (env.AUTH_ISSUER) jwt.setIssuer(env.AUTH_ISSUER);
    if (env.AUTH_AUDIENCE) jwt.setAudience(env.AUTH_AUDIENCE);
    const token = await jwt.sign(new TextEncoder().encode(env.AUTH_SECRET));
    return c.json({ token }, 200, { "Cache-Control": "no-store" });
  });
}
