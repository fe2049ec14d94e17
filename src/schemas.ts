import { z } from "@hono/zod-openapi";
import type { Limits } from "./env";
import { base64UrlBytes } from "./push/keys";

// The zod schemas are the single truth for REST bodies, WebSocket frames and the OpenAPI document.
// Those that depend on a configurable limit are made from the limits in force.

export const USER_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
export const LOCAL_ID = /^[A-Za-z0-9_-]{1,64}$/;

export const UserId = z.string().regex(USER_ID, "not a valid user id");
const Time = z.string().openapi({ example: "2026-11-25T12:00:00.000Z", format: "date-time" });

export const Participant = z
  .object({
    userId: z.string(),
    role: z.enum(["owner", "member"]),
    joinedAt: Time,
    lastReadSeq: z.number().int(),
    lastDeliveredSeq: z.number().int(),
  })
  .openapi("Participant");

export const LastMessage = z
  .object({ seq: z.number().int(), senderId: z.string(), preview: z.string(), createdAt: Time })
  .openapi("LastMessage");

export const Conversation = z
  .object({
    id: z.string(),
    title: z.string().nullable(),
    direct: z.boolean(),
    createdBy: z.string(),
    createdAt: Time,
    updatedAt: Time,
    /** Grows with every change of the fields all members share: of two copies, the higher rev is newer. */
    rev: z.number().int(),
    lastSeq: z.number().int(),
    lastMessage: LastMessage.nullable(),
    participants: z.array(Participant),
    unreadCount: z.number().int(),
  })
  .openapi("Conversation");

export const Message = z
  .object({
    id: z.string(),
    conversationId: z.string(),
    seq: z.number().int(),
    senderId: z.string(),
    content: z.string(),
    localId: z.string().nullable(),
    createdAt: Time,
    editedAt: Time.nullable(),
    deletedAt: Time.nullable(),
  })
  .openapi("Message");

export const ErrorBody = z
  .object({
    error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
  })
  .openapi("Error");

export const ConversationPage = z
  .object({ conversations: z.array(Conversation), nextCursor: z.string().nullable() })
  .openapi("ConversationPage");

export const ConversationIdParam = z.object({
  id: z.string().openapi({ param: { name: "id", in: "path" }, example: "c7mQ3x0bT1q9yQ2kL0nZpA" }),
});

export type ConversationDto = z.infer<typeof Conversation>;
export type ParticipantDto = z.infer<typeof Participant>;
export type MessageDto = z.infer<typeof Message>;

/** Characters as people count them in limits: Unicode code points, so an emoji is one, not two. */
const codePoints = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/** A whole number from a query string, within bounds. */
const queryInt = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,15}$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

/** The schemas whose bounds come from the configured limits. */
export function limitedSchemas(limits: Limits) {
  const title = z
    .string()
    .trim()
    .min(1)
    .refine((s) => s.isWellFormed(), "must be well-formed Unicode (no lone surrogates)")
    .refine((s) => codePoints(s) <= limits.titleChars, `must be at most ${limits.titleChars} characters`)
    .openapi({ maxLength: limits.titleChars });
  const userIds = z
    .array(UserId)
    .min(1)
    .max(limits.participants - 1)
    .refine((ids) => new Set(ids).size === ids.length, "must not repeat a user");

  const content = z
    .string()
    .min(1)
    .refine((s) => s.isWellFormed(), "must be well-formed Unicode (no lone surrogates)")
    .refine((s) => codePoints(s) <= limits.contentChars, `must be at most ${limits.contentChars} characters`)
    .refine((s) => s.trim().length > 0, "must not be only white space")
    .refine((s) => new TextEncoder().encode(s).byteLength <= limits.contentBytes, {
      message: `must be at most ${limits.contentBytes} bytes of UTF-8`,
    })
    // JSON Schema counts code points too.
    .openapi({ maxLength: limits.contentChars, description: `At most ${limits.contentBytes} bytes of UTF-8` });

  return {
    content,
    createConversation: z
      .strictObject({
        participantIds: userIds,
        title: title.nullable().optional(),
        direct: z.boolean().optional(),
      })
      .refine((b) => !b.direct || b.participantIds.length === 1, {
        message: "a direct conversation has exactly one other participant",
        path: ["participantIds"],
      })
      .openapi("CreateConversation"),
    addParticipants: z.strictObject({ userIds }).openapi("AddParticipants"),
    listConversations: z.strictObject({
      limit: queryInt(1, limits.pageSize).optional(),
      cursor: z.string().max(200).optional(),
    }),
    pageLimit: queryInt(1, limits.pageSize),
  };
}

export type LimitedSchemas = ReturnType<typeof limitedSchemas>;

export const MessagePage = z.object({ messages: z.array(Message), hasMore: z.boolean() }).openapi("MessagePage");

export const Ticket = z.object({ ticket: z.string(), expiresAt: Time }).openapi("Ticket");

export const MessageSeqParam = ConversationIdParam.extend({
  seq: z.string().openapi({ param: { name: "seq", in: "path" }, example: "42" }),
});

/** The schemas of message writes and of the frames a client may send, from the limits in force. */
export function messageSchemas(limits: Limits) {
  const { content, pageLimit } = limitedSchemas(limits);
  const localId = z.string().regex(LOCAL_ID, "must be 1 to 64 letters, digits, _ or -");
  const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
  const querySeq = z
    .string()
    .regex(/^\d{1,15}$/, "must be a whole number")
    .transform(Number);
  return {
    send: z.strictObject({ content, localId: localId.optional() }).openapi("SendMessage"),
    edit: z.strictObject({ content }).openapi("EditMessage"),
    read: z.strictObject({ seq }).openapi("MarkRead"),
    typing: z.strictObject({ typing: z.boolean() }).openapi("Typing"),
    history: z
      .strictObject({ before: querySeq.optional(), after: querySeq.optional(), limit: pageLimit.optional() })
      .refine((q) => q.before === undefined || q.after === undefined, {
        message: "give before or after, not both",
        path: ["after"],
      }),
    connect: z.strictObject({ ticket: z.string().max(200).optional(), since: querySeq.optional() }),
    clientFrame: z.discriminatedUnion("type", [
      z
        .strictObject({ type: z.literal("send"), localId, content })
        .describe("Send a message: this socket gets `ack`, every other socket of the conversation `message`"),
      z
        .strictObject({ type: z.literal("typing"), typing: z.boolean() })
        .describe("Typing started or stopped; the server ends a typing state 5 s after its last refresh"),
      z
        .strictObject({ type: z.literal("read"), seq })
        .describe("Move the read marker, as POST /v1/conversations/{id}/read does; the others get `receipt`"),
    ]),
  };
}

export type MessageSchemas = ReturnType<typeof messageSchemas>;

const schemasByLimits = new Map<string, MessageSchemas>();

/**
 * The schemas for limits of the same values, built once per isolate. Every room reads its own limits object,
 * and building zod schemas costs CPU and memory that is not given back: keyed by the object, rooms taking
 * turns in one isolate rebuilt them for every frame, and the soak's heap grew by 40 KiB per message.
 */
export function messageSchemasFor(limits: Limits): MessageSchemas {
  const key = JSON.stringify(limits);
  let schemas = schemasByLimits.get(key);
  if (!schemas) {
    schemas = messageSchemas(limits);
    schemasByLimits.set(key, schemas);
  }
  return schemas;
}
export type ClientFrame = z.infer<MessageSchemas["clientFrame"]>;

/**
 * The frames the server sends on a conversation's socket. The server never parses them: the schema is here for
 * their type and for /asyncapi.json, so plain objects (a client may meet fields added later).
 */
export const ServerFrameSchema = z.discriminatedUnion("type", [
  z
    .object({
      type: z.literal("ready"),
      conversationId: z.string(),
      userId: z.string(),
      lastSeq: z.number().int(),
      participants: z.array(Participant),
      online: z.array(z.string()),
      typing: z.array(z.string()),
    })
    .describe("The first frame after connecting"),
  z
    .object({ type: z.literal("message"), message: Message })
    .describe("A new message; also the replay after `ready` when connected with `?since=S`, ascending"),
  z
    .object({ type: z.literal("resync"), fromSeq: z.number().int() })
    .describe("Instead of the replay when too many were missed: page them with GET …/messages?after=fromSeq"),
  z
    .object({ type: z.literal("ack"), localId: z.string(), message: Message })
    .describe("This socket's `send` was stored"),
  z.object({ type: z.literal("message_updated"), message: Message }).describe("An edit or a delete"),
  z
    .object({ type: z.literal("typing"), userId: z.string(), typing: z.boolean() })
    .describe("A user's typing started or ended (also by expiry)"),
  z
    .object({ type: z.literal("presence"), userId: z.string(), online: z.boolean() })
    .describe("A user's first socket opened or last socket closed (several devices count as one user)"),
  z
    .object({
      type: z.literal("receipt"),
      userId: z.string(),
      lastReadSeq: z.number().int(),
      lastDeliveredSeq: z.number().int(),
    })
    .describe("A participant's markers moved"),
  z
    .object({ type: z.literal("participants"), participants: z.array(Participant) })
    .describe("Participants were added or removed"),
  z
    .object({
      type: z.literal("error"),
      code: z.string(),
      message: z.string(),
      ref: z.string().describe("The localId of the send frame that was refused").optional(),
      retryAfterMs: z.number().int().describe("With rate_limited: when the client may try again").optional(),
    })
    .describe("A frame was refused; `ref` is the localId it concerned"),
]);
export type ServerFrame = z.infer<typeof ServerFrameSchema>;

// ---- The inbox: one socket per user -------------------------------------------------------------------

export const InboxTotals = z
  .object({
    /** The user's inbox version: it grows with every frame of the inbox socket. */
    version: z.number().int(),
    /** Unread messages over all the user's conversations. */
    unreadTotal: z.number().int(),
    /** Conversations with at least one unread message. */
    unreadConversations: z.number().int(),
  })
  .openapi("InboxTotals");

/** The query of the inbox socket. Its tickets name the user, so they are longer than a conversation's. */
export const InboxConnect = z.strictObject({
  ticket: z.string().max(400).optional(),
  since: queryInt(0, Number.MAX_SAFE_INTEGER).optional(),
});

/** The frames the server sends on a user's inbox socket (never parsed by the server, as ServerFrameSchema). */
export const InboxFrameSchema = z.discriminatedUnion("type", [
  // The totals' fields, not InboxTotals.extend(): an extended schema would carry its OpenAPI name along.
  z
    .object({ type: z.literal("inbox_ready"), userId: z.string(), ...InboxTotals.shape })
    .describe("The first frame after connecting"),
  z
    .object({ type: z.literal("conversation"), conversation: Conversation, ...InboxTotals.shape })
    .describe("One of the user's conversations changed in a way the list shows"),
  z
    .object({ type: z.literal("conversation_removed"), conversationId: z.string(), ...InboxTotals.shape })
    .describe("The user left or was removed; nothing more of that conversation follows"),
  z
    .object({ type: z.literal("resync"), fromVersion: z.number().int() })
    .describe("Instead of the replay when the changes after `since` are no longer kept: reload the list"),
  z
    .object({ type: z.literal("error"), code: z.string(), message: z.string() })
    .describe("A frame was refused: the inbox socket takes only `ping`"),
]);
export type InboxFrame = z.infer<typeof InboxFrameSchema>;

// ---- Push subscriptions -----------------------------------------------------------------------------------

/** A push service's URL for one browser subscription: https only (RFC 8030). */
const PushEndpoint = z
  .string()
  .max(2048)
  .refine((s) => URL.canParse(s) && new URL(s).protocol === "https:", "must be an https URL")
  .openapi({ format: "uri", example: "https://fcm.googleapis.com/fcm/send/c1KrmpTuRm0:APA91bH..." });

const base64UrlOf = (bytes: number, what: string) =>
  z
    .string()
    .max(200)
    .refine((s) => base64UrlBytes(s)?.length === bytes, `must be ${what}: ${bytes} bytes in base64url`);

export const PushSubscriptionBody = z
  .strictObject({
    endpoint: PushEndpoint,
    // Part of PushSubscription.toJSON(), so that a browser's subscription can be sent as it is; not used.
    expirationTime: z.number().nullable().optional(),
    keys: z.strictObject({
      p256dh: base64UrlOf(65, "an uncompressed P-256 public key"),
      auth: base64UrlOf(16, "the authentication secret"),
    }),
  })
  .openapi("PushSubscription");

export const PushUnsubscribeBody = z.strictObject({ endpoint: PushEndpoint }).openapi("PushUnsubscribe");
