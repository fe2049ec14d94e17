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
      z.strictObject({ type: z.literal("send"), localId, content }),
      z.strictObject({ type: z.literal("typing"), typing: z.boolean() }),
      z.strictObject({ type: z.literal("read"), seq }),
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

/** The frames the server sends on a conversation's socket. */
export type ServerFrame =
  | {
      type: "ready";
      conversationId: string;
      userId: string;
      lastSeq: number;
      participants: ParticipantDto[];
      online: string[];
      typing: string[];
    }
  | { type: "message"; message: MessageDto }
  | { type: "resync"; fromSeq: number }
  | { type: "ack"; localId: string; message: MessageDto }
  | { type: "message_updated"; message: MessageDto }
  | { type: "typing"; userId: string; typing: boolean }
  | { type: "presence"; userId: string; online: boolean }
  | { type: "receipt"; userId: string; lastReadSeq: number; lastDeliveredSeq: number }
  | { type: "participants"; participants: ParticipantDto[] }
  | { type: "error"; code: string; message: string; ref?: string; retryAfterMs?: number };

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

type Totals = z.infer<typeof InboxTotals>;

/** The query of the inbox socket. Its tickets name the user, so they are longer than a conversation's. */
export const InboxConnect = z.strictObject({
  ticket: z.string().max(400).optional(),
  since: queryInt(0, Number.MAX_SAFE_INTEGER).optional(),
});

/** The frames the server sends on a user's inbox socket. */
export type InboxFrame =
  | ({ type: "inbox_ready"; userId: string } & Totals)
  | ({ type: "conversation"; conversation: ConversationDto } & Totals)
  | ({ type: "conversation_removed"; conversationId: string } & Totals)
  | { type: "resync"; fromVersion: number }
  | { type: "error"; code: string; message: string };

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
