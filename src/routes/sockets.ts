import type { Context } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { isOriginAllowed } from "../middleware/origins";

// What both WebSocket routes (a conversation's, the inbox) check before they hand the upgrade on.

/** An allowed Origin and an upgrade, or the error the contract gives. */
export function assertUpgrade(c: Context<AppEnv>): void {
  if (!isOriginAllowed(c.env, c.req.header("Origin"))) throw new ApiError("forbidden", "This origin is not allowed");
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError("upgrade_required", "This route takes a WebSocket upgrade");
  }
}

/** The upgrade as the Durable Object receives it: the authenticated user and `since`, never the client's own. */
export function forwardUpgrade(c: Context<AppEnv>, userId: string, since: number | undefined): Request {
  const headers = new Headers(c.req.raw.headers);
  headers.set("X-User-Id", userId);
  headers.delete("X-Since");
  if (since !== undefined) headers.set("X-Since", String(since));
  return new Request(c.req.url, { headers });
}

export const unknownTicket = () => new ApiError("unauthenticated", "The ticket is unknown, used or expired");
