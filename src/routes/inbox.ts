import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { inboxTicket, parseInboxTicket } from "../domain/inbox";
import type { AppEnv } from "../env";
import { validationFailed } from "../errors";
import { InboxConnect, InboxTotals, Ticket } from "../schemas";
import { signTicket, verifiedSecret } from "../tickets";
import { inboxOf } from "./inbox-client";
import { bearer, bearerOrTicket, error, json, upgradeResponses } from "./openapi";
import { assertUpgrade, forwardUpgrade, unknownTicket } from "./sockets";

const errors = { 401: error("unauthenticated") };

export function inboxRoutes(app: OpenAPIHono<AppEnv>): void {
  const totals = createRoute({
    method: "get",
    path: "/v1/inbox",
    operationId: "getInbox",
    tags: ["Inbox"],
    summary: "The caller's unread totals over all their conversations, and their inbox version",
    security: bearer,
    responses: { 200: json(InboxTotals, "The totals"), ...errors },
  });
  app.openapi(totals, async (c) => c.json(await inboxOf(c.env, c.get("userId")).totals(), 200));

  const ticket = createRoute({
    method: "post",
    path: "/v1/inbox/ticket",
    operationId: "createInboxTicket",
    tags: ["Sockets"],
    summary: "A single-use ticket to open the caller's inbox socket from a browser",
    security: bearer,
    responses: { 201: json(Ticket, "Valid once, for a short time"), ...errors },
  });
  app.openapi(ticket, async (c) => {
    const me = c.get("userId");
    const issued = await inboxOf(c.env, me).issueTicket();
    const ticket = inboxTicket(me, await signTicket(c.env, { inboxOf: me }, issued.ticket));
    return c.json({ ticket, expiresAt: new Date(issued.expiresAt).toISOString() }, 201);
  });

  // A WebSocket upgrade, served by the plain handler below, so only documented here (as the conversation's).
  const connect = createRoute({
    method: "get",
    path: "/v1/inbox/ws",
    operationId: "connectInbox",
    tags: ["Sockets"],
    summary: "Open the caller's inbox socket; with `since`, what changed after that version is sent first",
    security: bearerOrTicket,
    request: { query: InboxConnect.omit({ ticket: true }) },
    responses: upgradeResponses("inbox"),
  });
  app.openAPIRegistry.registerPath(connect);
  app.get("/v1/inbox/ws", async (c) => {
    assertUpgrade(c);
    const query = InboxConnect.safeParse(c.req.query());
    if (!query.success) throw validationFailed(query.error);
    let userId: string | null = c.get("userId");
    if (query.data.ticket !== undefined) {
      // Checked here first: a made-up ticket wakes no inbox.
      const named = parseInboxTicket(query.data.ticket);
      const secret = named && (await verifiedSecret(c.env, { inboxOf: named.userId }, named.secret));
      if (!named || !secret || !(await inboxOf(c.env, named.userId).redeemTicket(secret))) throw unknownTicket();
      userId = named.userId;
    }
    return inboxOf(c.env, userId).fetch(forwardUpgrade(c, userId, query.data.since));
  });
}
