// The API contract's resources, REST bodies and frames (API.md), written out by hand for the SDK. The server
// derives the same shapes from its zod schemas (src/schemas.ts); the SDK cannot import those without taking
// zod, Hono and the Workers types into every app that installs it. test/client-contract.test.ts checks, at
// the type level, that each type here is exactly the server's, so the two cannot drift apart.

/** The error codes of the contract (API.md, "Errors"). */
export type ErrorCode =
  | "validation_failed"
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "idempotency_conflict"
  | "payload_too_large"
  | "upgrade_required"
  | "rate_limited"
  | "unavailable"
  | "internal";

// ---- Resources --------------------------------------------------------------------------------------------

export interface Participant {
  userId: string;
  role: "owner" | "member";
  /** ISO-8601 UTC, with milliseconds (every time of the contract is). */
  joinedAt: string;
  lastReadSeq: number;
  lastDeliveredSeq: number;
}

export interface LastMessage {
  seq: number;
  senderId: string;
  /** The first 140 characters. */
  preview: string;
  createdAt: string;
}

export interface Conversation {
  id: string;
  title: string | null;
  direct: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  /** Grows with every change of the fields all members share: of two copies, the higher rev is newer. */
  rev: number;
  /** 0 when empty. */
  lastSeq: number;
  lastMessage: LastMessage | null;
  participants: Participant[];
  /** lastSeq − the caller's lastReadSeq. */
  unreadCount: number;
}

export interface Message {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  /** "" once deleted. */
  content: string;
  localId: string | null;
  createdAt: string;
  editedAt: string | null;
  deletedAt: string | null;
}

// ---- REST bodies ------------------------------------------------------------------------------------------

export interface ConversationPage {
  conversations: Conversation[];
  nextCursor: string | null;
}

export interface MessagePage {
  messages: Message[];
  hasMore: boolean;
}

export interface Ticket {
  ticket: string;
  expiresAt: string;
}

/** `GET /v1/inbox`: the caller's inbox version and unread totals. */
export interface InboxState {
  version: number;
  unreadTotal: number;
  unreadConversations: number;
}

// ---- A conversation's socket ------------------------------------------------------------------------------

export type ClientFrame =
  | { type: "send"; localId: string; content: string }
  | { type: "typing"; typing: boolean }
  | { type: "read"; seq: number };

export type ServerFrame =
  | {
      type: "ready";
      conversationId: string;
      userId: string;
      lastSeq: number;
      participants: Participant[];
      online: string[];
      typing: string[];
    }
  | { type: "message"; message: Message }
  | { type: "resync"; fromSeq: number }
  | { type: "ack"; localId: string; message: Message }
  | { type: "message_updated"; message: Message }
  | { type: "typing"; userId: string; typing: boolean }
  | { type: "presence"; userId: string; online: boolean }
  | { type: "receipt"; userId: string; lastReadSeq: number; lastDeliveredSeq: number }
  | { type: "participants"; participants: Participant[] }
  | {
      type: "error";
      code: string;
      message: string;
      /** The localId of the send frame that was refused. */
      ref?: string | undefined;
      /** With rate_limited: when the client may try again. */
      retryAfterMs?: number | undefined;
    };

// ---- The user's inbox socket ------------------------------------------------------------------------------

export type InboxFrame =
  | { type: "inbox_ready"; userId: string; version: number; unreadTotal: number; unreadConversations: number }
  | {
      type: "conversation";
      conversation: Conversation;
      version: number;
      unreadTotal: number;
      unreadConversations: number;
    }
  | {
      type: "conversation_removed";
      conversationId: string;
      version: number;
      unreadTotal: number;
      unreadConversations: number;
    }
  | { type: "resync"; fromVersion: number }
  | { type: "error"; code: string; message: string };
