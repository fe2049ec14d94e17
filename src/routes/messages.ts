import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { isWellFormedId } from "../domain/conversations";
import { serverKey } from "../domain/messages";
import type { AppEnv, Limits } from "../env";
import { notFound, validationFailed } from "../errors";
import {
  ConversationIdParam,
  Message,
  MessagePage,
  MessageSeqParam,
  messageSchemasFor,
  Participant,
  Ticket,
} from "../schemas";
import { signTicket, verifiedSecret } from "../tickets";
import {
  bearer,
  bearerOrTicket,
  commonErrors,
  error,
  forbidden,
  json,
  jsonBody,
  rateLimited,
  upgradeResponses,
} from "./openapi";
import { retriedOnce, roomOf, unwrap } from "./room-client";
import { assertUpgrade, forwardUpgrade, unknownTicket } from "./sockets";

/** A seq in a path: a message that cannot exist is simply not found. */
function seqParam(raw: string): number {
  if (!/^\d{1,15}$/.test(raw)) throw notFound();
  return Number(raw);
}

const limited = {
  ...rateLimited,
  503: error(
    "unavailable: nothing was stored, or (details.outcome: unknown) it may have been; retry with the same localId",
  ),
};

export function messageRoutes(app: OpenAPIHono<AppEnv>, limits: Limits): void {
  const schemas = messageSchemasFor(limits);

  const history = createRoute({
    method: "get",
    path: "/v1/conversations/{id}/messages",
    operationId: "listMessages",
    tags: ["Messages"],
    summary: "History by keyset on seq: newest first, or oldest first with `after`",
    security: bearer,
    request: { params: ConversationIdParam, query: schemas.history },
    responses: { 200: json(MessagePage, "One page"), ...commonErrors },
  });
  app.openapi(history, async (c) => {
    const { id } = c.req.valid("param");
    const query = c.req.valid("query");
    const page = unwrap(
      await roomOf(c.env, id).history({
        userId: c.get("userId"),
        before: query.before,
        after: query.after,
        limit: query.limit ?? 50,
      }),
    );
    return c.json(page, 200);
  });

  const send = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/messages",
    operationId: "sendMessage",
    tags: ["Messages"],
    summary: "Send a message; the same localId again returns the original",
    security: bearer,
    request: { params: ConversationIdParam, body: jsonBody(schemas.send) },
    responses: {
      200: json(Message, "A retry: the original message"),
      201: json(Message, "Stored, then broadcast"),
      409: error("idempotency_conflict: this localId was used for other content"),
      ...limited,
      ...commonErrors,
    },
  });
  app.openapi(send, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const me = c.get("userId");
    const room = roomOf(c.env, id);
    // Every REST send is idempotent, so that a reply lost on the way can be retried here.
    const localId = body.localId ?? serverKey();
    const result = unwrap(await retriedOnce(() => room.sendMessage({ senderId: me, content: body.content, localId })));
    // A key of the Worker's is new: found stored, it was stored by this request's first attempt.
    return c.json(result.message, body.localId === undefined ? 201 : result.status);
  });

  const edit = createRoute({
    method: "patch",
    path: "/v1/conversations/{id}/messages/{seq}",
    operationId: "editMessage",
    tags: ["Messages"],
    summary: "Edit a message (sender only, not once deleted)",
    security: bearer,
    request: { params: MessageSeqParam, body: jsonBody(schemas.edit) },
    responses: { 200: json(Message, "The edited message"), ...commonErrors, ...forbidden },
  });
  app.openapi(edit, async (c) => {
    const { id, seq } = c.req.valid("param");
    const { content } = c.req.valid("json");
    const me = c.get("userId");
    const room = roomOf(c.env, id);
    return c.json(unwrap(await room.editMessage({ actorId: me, seq: seqParam(seq), content })), 200);
  });

  const remove = createRoute({
    method: "delete",
    path: "/v1/conversations/{id}/messages/{seq}",
    operationId: "deleteMessage",
    tags: ["Messages"],
    summary: "Delete a message (sender or owner); it stays as a tombstone with empty content",
    security: bearer,
    request: { params: MessageSeqParam },
    responses: { 200: json(Message, "The tombstone"), ...commonErrors, ...forbidden },
  });
  app.openapi(remove, async (c) => {
    const { id, seq } = c.req.valid("param");
    const me = c.get("userId");
    const room = roomOf(c.env, id);
    return c.json(unwrap(await room.deleteMessage({ actorId: me, seq: seqParam(seq) })), 200);
  });

  const read = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/read",
    operationId: "markRead",
    tags: ["Messages"],
    summary: "Move the caller's read marker forward (clamped to the last message)",
    security: bearer,
    request: { params: ConversationIdParam, body: jsonBody(schemas.read) },
    responses: { 200: json(Participant, "The caller's markers"), ...commonErrors, ...rateLimited },
  });
  app.openapi(read, async (c) => {
    const { id } = c.req.valid("param");
    const { seq } = c.req.valid("json");
    const me = c.get("userId");
    return c.json(unwrap(await roomOf(c.env, id).markRead({ userId: me, seq })), 200);
  });

  const typing = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/typing",
    operationId: "setTyping",
    tags: ["Messages"],
    summary: "Typing started or stopped (the REST fallback of the typing frame)",
    security: bearer,
    request: { params: ConversationIdParam, body: jsonBody(schemas.typing) },
    responses: { 204: { description: "Announced" }, ...commonErrors, ...rateLimited },
  });
  app.openapi(typing, async (c) => {
    const { id } = c.req.valid("param");
    const me = c.get("userId");
    unwrap(await roomOf(c.env, id).setTyping({ userId: me, typing: c.req.valid("json").typing }));
    return c.body(null, 204);
  });

  const ticket = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/ticket",
    operationId: "createConversationTicket",
    tags: ["Sockets"],
    summary: "A single-use ticket to open this conversation's WebSocket from a browser",
    security: bearer,
    request: { params: ConversationIdParam },
    responses: { 201: json(Ticket, "Valid once, for a short time"), ...commonErrors },
  });
  app.openapi(ticket, async (c) => {
    const { id } = c.req.valid("param");
    const me = c.get("userId");
    const issued = unwrap(await roomOf(c.env, id).issueTicket({ userId: me }));
    const ticket = await signTicket(c.env, { conversationId: id }, issued.ticket);
    return c.json({ ticket, expiresAt: new Date(issued.expiresAt).toISOString() }, 201);
  });

  // A WebSocket upgrade, served by the plain handler below, so only documented here. Its query's ticket is the
  // Ticket security scheme, the other way to authenticate than the Authorization header.
  const connect = createRoute({
    method: "get",
    path: "/v1/conversations/{id}/ws",
    operationId: "connectConversation",
    tags: ["Sockets"],
    summary: "Open this conversation's WebSocket; with `since`, the messages after that seq are replayed first",
    security: bearerOrTicket,
    request: { params: ConversationIdParam, query: schemas.connect.omit({ ticket: true }) },
    responses: {
      ...upgradeResponses("conversation"),
      404: error("not_found: no such conversation, or the caller is not a participant"),
      503: error("unavailable: the conversation could not be opened; reconnect"),
    },
  });
  app.openAPIRegistry.registerPath(connect);
  app.get("/v1/conversations/:id/ws", async (c) => {
    const id = c.req.param("id");
    assertUpgrade(c);
    const query = schemas.connect.safeParse(c.req.query());
    if (!query.success) throw validationFailed(query.error);
    // Without a ticket, the bearer token was checked by the middleware, as on every other route. A ticket's
    // signature is checked before the id: a made-up ticket gets the same 401 whatever the id, waking nothing.
    let userId: string | null = c.get("userId");
    const { ticket } = query.data;
    const secret = ticket === undefined ? undefined : await verifiedSecret(c.env, { conversationId: id }, ticket);
    if (secret === null) throw unknownTicket();
    if (!isWellFormedId(id)) throw notFound();
    const room = roomOf(c.env, id);
    if (secret !== undefined) {
      userId = await room.redeemTicket(secret);
      if (!userId) throw unknownTicket();
    }
    // Membership is checked by the room, which keeps it: a non-participant gets the same 404 as a stranger.
    return room.fetch(forwardUpgrade(c, userId, query.data.since));
  });
}

/** Is this a WebSocket route with a ticket, which authenticates itself? */
export const isTicketConnect = (path: string, ticket: string | undefined) =>
  ticket !== undefined && /^\/v1\/(conversations\/[^/]+|inbox)\/ws$/.test(path);
