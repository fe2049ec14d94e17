import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

// Times are integer milliseconds since the epoch; the API renders them as ISO-8601 strings.

export const conversations = sqliteTable("conversations", {
  id: text("id").primaryKey(),
  title: text("title"),
  direct: integer("direct", { mode: "boolean" }).notNull().default(false),
  // The sorted user pair of a direct conversation; unique, so a pair has at most one.
  directKey: text("direct_key").unique(),
  createdBy: text("created_by").notNull(),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
  lastSeq: integer("last_seq").notNull().default(0),
  lastMessageSenderId: text("last_message_sender_id"),
  lastMessagePreview: text("last_message_preview"),
  lastMessageAt: integer("last_message_at"),
  // The conversation's rev as its room last projected it here; a projection is taken only when newer.
  rev: integer("rev").notNull().default(0),
  projectedVersion: integer("projected_version").notNull().default(0),
});

export const participants = sqliteTable(
  "participants",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id, { onDelete: "cascade" }),
    userId: text("user_id").notNull(),
    role: text("role", { enum: ["owner", "member"] }).notNull(),
    joinedAt: integer("joined_at").notNull(),
    lastReadSeq: integer("last_read_seq").notNull().default(0),
    lastDeliveredSeq: integer("last_delivered_seq").notNull().default(0),
    // A copy of conversations.updated_at, so that a user's conversation list is one index range scan.
    activityAt: integer("activity_at").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.conversationId, t.userId] }),
    index("participants_by_user_activity").on(t.userId, sql`${t.activityAt} DESC`, sql`${t.conversationId} DESC`),
  ],
);

// Version 0.1 kept every message here. Rooms now keep their own (src/room/); a room whose storage is empty
// imports its conversation's rows from this table once. Nothing writes it any more.
export const messages = sqliteTable(
  "messages",
  {
    id: text("id").primaryKey(),
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id, { onDelete: "cascade" }),
    seq: integer("seq").notNull(),
    senderId: text("sender_id").notNull(),
    content: text("content").notNull(),
    localId: text("local_id"),
    // SHA-256 of the content as first sent with a localId: a retry is told apart from a reuse even after an
    // edit or a delete has changed the content.
    sentHash: text("sent_hash"),
    createdAt: integer("created_at").notNull(),
    editedAt: integer("edited_at"),
    deletedAt: integer("deleted_at"),
  },
  (t) => [
    uniqueIndex("messages_by_seq").on(t.conversationId, t.seq),
    uniqueIndex("messages_by_local_id").on(t.conversationId, t.senderId, t.localId),
  ],
);

export const pushSubscriptions = sqliteTable(
  "push_subscriptions",
  {
    endpoint: text("endpoint").primaryKey(),
    userId: text("user_id").notNull(),
    p256dh: text("p256dh").notNull(),
    auth: text("auth").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("push_subscriptions_by_user").on(t.userId)],
);
