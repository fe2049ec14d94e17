import { USER_ID } from "../schemas";
import type { SharedConversation } from "./conversations";

// What a user's inbox learns from the rooms, and how it decides. Pure: the inbox's storage applies it.

/**
 * A room's word about one conversation, as of the room's version `rev` of it (its Conversation.rev): built
 * once per feed for all its members, each inbox adds its user's unread count.
 */
export type InboxChange =
  | { kind: "conversation"; conversation: SharedConversation }
  | { kind: "removed"; conversationId: string; rev: number };

/** What an inbox holds of a conversation: the room's version of it, and whether the user is out of it. */
export interface InboxEntryState {
  rev: number;
  removed: boolean;
}

export const changeRev = (change: InboxChange) =>
  change.kind === "conversation" ? change.conversation.rev : change.rev;

export const changeConversationId = (change: InboxChange) =>
  change.kind === "conversation" ? change.conversation.id : change.conversationId;

/**
 * What the inbox of `userId` does with a change: ignore anything not newer than what it holds (a replay or a
 * late delivery never moves it back); store a conversation the user belongs to; remove one they do not
 * (also a conversation state that no longer lists them) when it was shown; and remember the removal of one
 * it never showed, so that an older state read elsewhere (the directory, when the inbox is first seeded)
 * cannot bring it back.
 */
export function decide(
  stored: InboxEntryState | null,
  change: InboxChange,
  userId: string,
): "ignore" | "store" | "remove" | "remember" {
  if (stored && stored.rev >= changeRev(change)) return "ignore";
  const member = change.kind === "conversation" && change.conversation.participants.some((p) => p.userId === userId);
  if (member) return "store";
  if (!stored) return "remember";
  return stored.removed ? "ignore" : "remove";
}

/** A room calls at most this many inboxes per second, however many members it has. */
export const MAX_INBOX_CALLS_PER_SECOND = 200;

/**
 * From one feed of a room's inboxes to the next: its coalescing delay, or longer for a room of many members,
 * so that it makes at most MAX_INBOX_CALLS_PER_SECOND calls (500 ms for 100 recipients).
 */
export const feedSpacingMs = (recipients: number, coalesceMs: number) =>
  Math.max(coalesceMs, Math.ceil((recipients * 1000) / MAX_INBOX_CALLS_PER_SECOND));

/**
 * How a socket that connects with `?since` catches up: from its version when the inbox still holds every
 * change after it; otherwise (changes forgotten, or a version this inbox never gave) a resync.
 */
export function catchUpPlan(since: number, forgottenUpTo: number, version: number): "replay" | "resync" {
  return since >= forgottenUpTo && since <= version ? "replay" : "resync";
}

export interface UnreadTotals {
  unreadTotal: number;
  unreadConversations: number;
}

// An inbox ticket names its user, since the inbox socket's path does not: `<user id in base64url>.<signed>`,
// where `signed` is the inbox's secret with the Worker's signature (src/tickets.ts). The inbox redeems the
// secret once; naming another user gets nothing.

export function inboxTicket(userId: string, secret: string): string {
  return `${btoa(userId).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}.${secret}`;
}

export function parseInboxTicket(ticket: string): { userId: string; secret: string } | null {
  const match = /^([A-Za-z0-9_-]{1,200})\.([A-Za-z0-9_.-]{1,200})$/.exec(ticket);
  if (!match?.[1] || !match[2]) return null;
  let userId: string;
  try {
    userId = atob(match[1].replaceAll("-", "+").replaceAll("_", "/"));
  } catch {
    return null;
  }
  // A name no user can have wakes no inbox.
  return USER_ID.test(userId) ? { userId, secret: match[2] } : null;
}
