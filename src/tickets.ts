import type { Env } from "./env";
import { ApiError } from "./errors";

// A ticket as the Worker hands it out: the single-use secret that a room or an inbox stores, and the Worker's
// signature over what it opens (`<secret>.<signature>`). A ticket not signed for the socket it is used on is
// refused by the Worker itself, before any Object wakes: nobody can learn from a made-up ticket whether a
// conversation or a user exists, nor wake an Object to find out.

/** What a ticket opens: one conversation's socket, or one user's inbox socket. */
export type TicketScope = { conversationId: string } | { inboxOf: string };

const keys = new Map<string, Promise<CryptoKey>>();
const encoder = new TextEncoder();

/** The signing key: `TICKET_SECRET`, else the HS256 secret of the tokens (a JWKS setup must set the first). */
function ticketKey(env: Env): Promise<CryptoKey> {
  const secret = env.TICKET_SECRET || env.AUTH_SECRET;
  if (!secret) throw new ApiError("unavailable", "Tickets are not configured: set TICKET_SECRET", undefined, 60);
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(`ticket:${secret}`), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keys.set(secret, key);
  }
  return key;
}

const signed = (scope: TicketScope, secret: string) =>
  encoder.encode(
    "conversationId" in scope
      ? `conversation\n${scope.conversationId}\n${secret}`
      : `inbox\n${scope.inboxOf}\n${secret}`,
  );

export async function signTicket(env: Env, scope: TicketScope, secret: string): Promise<string> {
  const signature = await crypto.subtle.sign("HMAC", await ticketKey(env), signed(scope, secret));
  return `${secret}.${toBase64Url(new Uint8Array(signature))}`;
}

/** The secret of a ticket signed for this scope, or null: then it was made up, or meant for another socket. */
export async function verifiedSecret(env: Env, scope: TicketScope, ticket: string): Promise<string | null> {
  const match = /^([A-Za-z0-9_-]{1,100})\.([A-Za-z0-9_-]{43})$/.exec(ticket);
  if (!match?.[1] || !match[2]) return null;
  const signature = fromBase64Url(match[2]);
  if (!signature) return null;
  const ok = await crypto.subtle.verify("HMAC", await ticketKey(env), signature, signed(scope, match[1]));
  return ok ? match[1] : null;
}

export function toBase64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array | null {
  try {
    return Uint8Array.from(atob(text.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
