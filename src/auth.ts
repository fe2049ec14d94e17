import { createRemoteJWKSet, type JWTVerifyGetKey, type JWTVerifyOptions, jwtVerify } from "jose";
import type { Env } from "./env";
import { ApiError } from "./errors";
import { USER_ID } from "./schemas";

/** How tokens are checked: a shared HS256 secret, or the public keys of a JWKS, never both. */
export type AuthConfig =
  | { kind: "secret"; secret: Uint8Array; issuer?: string; audience?: string }
  | { kind: "jwks"; keys: JWTVerifyGetKey; issuer?: string; audience?: string };

const jwksByUrl = new Map<string, JWTVerifyGetKey>();

export function authConfig(env: Env): AuthConfig {
  const issuer = env.AUTH_ISSUER || undefined;
  const audience = env.AUTH_AUDIENCE || undefined;
  if (env.AUTH_JWKS_URL) {
    let keys = jwksByUrl.get(env.AUTH_JWKS_URL);
    if (!keys) {
      keys = createRemoteJWKSet(new URL(env.AUTH_JWKS_URL));
      jwksByUrl.set(env.AUTH_JWKS_URL, keys);
    }
    return { kind: "jwks", keys, issuer, audience };
  }
  if (!env.AUTH_SECRET) throw new Error("AUTH_SECRET is not set");
  return { kind: "secret", secret: new TextEncoder().encode(env.AUTH_SECRET), issuer, audience };
}

/** Verifies a bearer token and returns its subject, the user id. Any failure is `401 unauthenticated`. */
export async function verifyToken(token: string, config: AuthConfig): Promise<string> {
  const options: JWTVerifyOptions = {
    // Pinned per mode: no `none`, and no HS/RS confusion, since a secret never verifies an RS/ES token.
    algorithms: config.kind === "secret" ? ["HS256"] : ["RS256", "ES256"],
    requiredClaims: ["exp", "sub"],
    issuer: config.issuer,
    audience: config.audience,
  };
  try {
    const { payload } =
      config.kind === "secret"
        ? await jwtVerify(token, config.secret, options)
        : await jwtVerify(token, config.keys, options);
    if (typeof payload.sub !== "string" || !USER_ID.test(payload.sub)) throw new Error("bad subject");
    return payload.sub;
  } catch {
    throw new ApiError("unauthenticated", "The token is missing, invalid or expired");
  }
}

export function bearerToken(header: string | undefined): string {
  const match = header?.match(/^Bearer +([^ ]+)$/i);
  if (!match?.[1]) throw new ApiError("unauthenticated", "Authorization: Bearer <token> is required");
  return match[1];
}
