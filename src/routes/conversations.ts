import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { drizzle } from "drizzle-orm/d1";
import {
  addParticipants,
  type ConversationWithMembers,
  type Db,
  findConversationFor,
  findDirectConversationId,
  findMembers,
  insertConversation,
  listConversationsFor,
  rejoinDirect,
  removeParticipant,
} from "../db/conversations";
import {
  assertInvitable,
  canRemoveParticipant,
  decodeCursor,
  directKey,
  encodeCursor,
  newId,
  toConversation,
  toParticipant,
} from "../domain/conversations";
import type { AppEnv, Env, Limits } from "../env";
import { ApiError, notFound } from "../errors";
import { Conversation, ConversationIdParam, ConversationPage, limitedSchemas } from "../schemas";
import { bearer, commonErrors, forbidden, json, jsonBody } from "./openapi";
import { roomOf } from "./room-client";

export const database = (env: Env): Db => drizzle(env.DB);

/** The conversation as the caller sees it; `not_found` when it is missing or the caller is not in it. */
async function conversationOf(db: Db, conversationId: string, userId: string): Promise<ConversationWithMembers> {
  const found = await findConversationFor(db, conversationId, userId);
  if (!found) throw notFound();
  return found;
}

const view = (found: ConversationWithMembers, userId: string) =>
  toConversation(found.conversation, found.members, userId);

export function conversationRoutes(app: OpenAPIHono<AppEnv>, limits: Limits): void {
  const schemas = limitedSchemas(limits);

  const create = createRoute({
    method: "post",
    path: "/v1/conversations",
    summary: "Create a conversation, or get the existing direct conversation of a pair",
    security: bearer,
    request: { body: jsonBody(schemas.createConversation) },
    responses: {
      200: json(Conversation, "The existing direct conversation of this pair"),
      201: json(Conversation, "Created; the caller is its owner"),
      ...commonErrors,
    },
  });
  app.openapi(create, async (c) => {
    const me = c.get("userId");
    const body = c.req.valid("json");
    assertInvitable(me, body.participantIds, "participantIds");
    const db = database(c.env);
    const now = Date.now();
    const direct = body.direct === true;
    const key = direct ? directKey(me, body.participantIds[0] as string) : null;

    const existingDirect = async () => {
      const existingId = key ? await findDirectConversationId(db, key) : null;
      if (!existingId) return null;
      await rejoinDirect(db, existingId, me, now);
      return view(await conversationOf(db, existingId, me), me);
    };

    const existing = await existingDirect();
    if (existing) return c.json(existing, 200);
    const id = newId();
    try {
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
    return c.json(view(await conversationOf(db, id, me), me), 201);
  });

  const list = createRoute({
    method: "get",
    path: "/v1/conversations",
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
        conversations: page.map((found) => view(found, me)),
        nextCursor: hasMore && last ? encodeCursor(last.cursor) : null,
      },
      200,
    );
  });

  const get = createRoute({
    method: "get",
    path: "/v1/conversations/{id}",
    summary: "One conversation",
    security: bearer,
    request: { params: ConversationIdParam },
    responses: { 200: json(Conversation, "The conversation"), ...commonErrors },
  });
  app.openapi(get, async (c) => {
    const me = c.get("userId");
    return c.json(view(await conversationOf(database(c.env), c.req.valid("param").id, me), me), 200);
  });

  const add = createRoute({
    method: "post",
    path: "/v1/conversations/{id}/participants",
    summary: "Add participants (owner only); users already in it are left as they are",
    security: bearer,
    request: { params: ConversationIdParam, body: jsonBody(schemas.addParticipants) },
    responses: { 200: json(Conversation, "The conversation after the change"), ...commonErrors, ...forbidden },
  });
  app.openapi(add, async (c) => {
    const me = c.get("userId");
    const { id } = c.req.valid("param");
    const { userIds } = c.req.valid("json");
    const db = database(c.env);
    const found = await conversationOf(db, id, me);
    const role = found.members.find((m) => m.userId === me)?.role;
    if (role !== "owner") throw new ApiError("forbidden", "Only an owner can add participants");
    if (found.conversation.direct)
      throw new ApiError("forbidden", "A direct conversation has exactly two participants");

    const present = new Set(found.members.map((m) => m.userId));
    const newcomers = userIds.filter((u) => !present.has(u));
    if (present.size + newcomers.length > limits.participants) throw participantLimit(limits);
    if (newcomers.length === 0) return c.json(view(found, me), 200);

    await addParticipants(db, id, newcomers, limits.participants, Date.now());
    const after = await conversationOf(db, id, me);
    await announceParticipants(c.env, after, []);
    // The insert checks the limit again as it runs: a concurrent addition may have taken the room.
    if (!newcomers.every((u) => after.members.some((m) => m.userId === u))) throw participantLimit(limits);
    return c.json(view(after, me), 200);
  });

  const remove = createRoute({
    method: "delete",
    path: "/v1/conversations/{id}/participants/{userId}",
    summary: "Remove a participant (owner), or leave (anyone, with their own id)",
    security: bearer,
    request: {
      params: ConversationIdParam.extend({
        userId: z.string().openapi({ param: { name: "userId", in: "path" } }),
      }),
    },
    responses: { 204: { description: "Removed" }, ...commonErrors, ...forbidden },
  });
  app.openapi(remove, async (c) => {
    const me = c.get("userId");
    const { id, userId } = c.req.valid("param");
    const db = database(c.env);
    const found = await conversationOf(db, id, me);
    const actor = found.members.find((m) => m.userId === me);
    if (!actor || !found.members.some((m) => m.userId === userId)) throw notFound();
    if (!canRemoveParticipant(me, actor.role, userId)) {
      throw new ApiError("forbidden", "Only an owner can remove other participants");
    }
    await removeParticipant(db, id, userId);
    const members = await findMembers(db, id);
    await announceParticipants(c.env, { conversation: found.conversation, members }, [userId]);
    return c.body(null, 204);
  });
}

/** The room tells every socket; a removed user's sockets are closed with 4403. */
async function announceParticipants(env: Env, found: ConversationWithMembers, removed: string[]): Promise<void> {
  await roomOf(env, found.conversation.id).participantsChanged({
    conversationId: found.conversation.id,
    participants: found.members.map(toParticipant),
    removed,
  });
}

const participantLimit = (limits: Limits) =>
  new ApiError("validation_failed", "The request is not valid", [
    { path: "userIds", message: `a conversation has at most ${limits.participants} participants` },
  ]);
