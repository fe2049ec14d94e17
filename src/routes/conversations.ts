import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { type Db, findDirectConversationId, insertConversation, listConversationsFor } from "../db/conversations";
import { directory } from "../db/directory";
import { assertInvitable, decodeCursor, directKey, encodeCursor, newId, toConversation } from "../domain/conversations";
import type { AppEnv, Env, Limits } from "../env";
import { Conversation, ConversationIdParam, ConversationPage, limitedSchemas } from "../schemas";
import { spend } from "./inbox-client";
import { bearer, commonErrors, forbidden, json, jsonBody, rateLimited } from "./openapi";
import { roomOf, unwrap } from "./room-client";

export const database = (env: Env): Db => directory(env);

export function conversationRoutes(app: OpenAPIHono<AppEnv>, limits: Limits): void {
  const schemas = limitedSchemas(limits);

  const create = createRoute({
    method: "post",
    path: "/v1/conversations",
    operationId: "createConversation",
    tags: ["Conversations"],
    summary: "Create a conversation, or get the existing direct conversation of a pair",
    security: bearer,
    request: { body: jsonBody(schemas.createConversation) },
    responses: {
      200: json(Conversation, "The existing direct conversation of this pair"),
      201: json(Conversation, "Created; the caller is its owner"),
      ...commonErrors,
      ...rateLimited,
    },
  });
  app.openapi(create, async (c) => {
    const me = c.get("userId");
    const body = c.req.valid("json");
    assertInvitable(me, body.participantIds, "participantIds");
    await spend(c.env, me, "create");
    const db = database(c.env);
    const now = Date.now();
    const direct = body.direct === true;
    const key = direct ? directKey(me, body.participantIds[0] as string) : null;

    // A pair has one direct conversation: creating it again returns it (and brings back one who had left).
    const existingDirect = async () => {
      const existingId = key ? await findDirectConversationId(db, key) : null;
      return existingId ? unwrap(await roomOf(c.env, existingId).rejoinDirect({ userId: me })) : null;
    };

    const existing = await existingDirect();
    if (existing) return c.json(existing, 200);
    const id = newId();
    const memberIds = [me, ...body.participantIds];
    try {
      // The directory first: once it has the conversation, the room can always adopt it from there.
      await insertConversation(db, {
        id,
        title: body.title ?? null,
        direct,
        directKey: key,
        createdBy: me,
        memberIds: body.participantIds,
        now,
      });
    } catch (err) {
      // Two first messages of a pair at once: the other request created it, so answer with that one.
      const raced = await existingDirect();
      if (raced) return c.json(raced, 200);
      throw err;
    }
    const created = await roomOf(c.env, id).create({
      id,
      title: body.title ?? null,
      direct,
      createdBy: me,
      createdAt: now,
      members: memberIds.map((userId, i) => ({
        userId,
        role: i === 0 ? "owner" : "member",
        joinedAt: now,
        lastReadSeq: 0,
        lastDeliveredSeq: 0,
      })),
    });
    return c.json(unwrap(created), 201);
  });

  const list = createRoute({
    method: "get",
    path: "/v1/conversations",
    operationId: "listConversations",
    tags: ["Conversations"],
    summary: "The caller's conversations, most recent activity first",
    security: bearer,
    request: { query: schemas.listConversations },
    responses: { 200: json(ConversationPage, "One page; nextCursor is null on the last"), ...commonErrors },
  });
  app.openapi(list, async (c) => {
    const me = c.get("userId");
    const query = c.req.valid("query");
    const cursor = query.cursor === undefined ? null : decodeCursor(query.cursor);
    const { page, hasMore } = await listConversationsFor(database(c.env), me, query.limit ?? 20, cursor);
    const last = page.at(-1);
    return c.json(
      {
        conversations: page.map((found) => toConversation(found.conversation, found.members, me)),
        nextCursor: hasMore && last ? encodeCursor(last.cursor) : null,
      },
      200,
    );
  });

  const get = createRoute({
    method: "get",
    path: "/v1/conversations/{id}",
    operationId: "getConversation",
    tags: ["Conversations"],
    summary: "One conversation",
    security: bearer,
    request: { params: ConversationIdParam },
    responses: { 200: json(Conversation, "The conversation"), ...commonErrors },
  });
  app.openapi(get, async (c) => {
    const me = c.get("userId");
    return c.json(unwrap(await roomOf(c.env, c.req.valid("param").id).conversation({ userId: me })), 200);
  });

  const add = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/participants",
    operationId: "addParticipants",
    tags: ["Conversations"],
    summary: "Add participants (owner only); users already in it are left as they are",
    security: bearer,
    request: { params: ConversationIdParam, body: jsonBody(schemas.addParticipants) },
    responses: {
      200: json(Conversation, "The conversation after the change"),
      ...commonErrors,
      ...forbidden,
      ...rateLimited,
    },
  });
  app.openapi(add, async (c) => {
    const me = c.get("userId");
    const { id } = c.req.valid("param");
    const { userIds } = c.req.valid("json");
    await spend(c.env, me, "membership");
    return c.json(unwrap(await roomOf(c.env, id).addParticipants({ actorId: me, userIds })), 200);
  });

  const remove = createRoute({
    method: "delete",
    path: "/v1/conversations/{id}/participants/{userId}",
    operationId: "removeParticipant",
    tags: ["Conversations"],
    summary: "Remove a participant (owner), or leave (anyone, with their own id)",
    security: bearer,
    request: {
      params: ConversationIdParam.extend({
        userId: z.string().openapi({ param: { name: "userId", in: "path" } }),
      }),
    },
    responses: { 204: { description: "Removed" }, ...commonErrors, ...forbidden, ...rateLimited },
  });
  app.openapi(remove, async (c) => {
    const me = c.get("userId");
    const { id, userId } = c.req.valid("param");
    await spend(c.env, me, "membership");
    unwrap(await roomOf(c.env, id).removeParticipant({ actorId: me, userId }));
    return c.body(null, 204);
  });
}
