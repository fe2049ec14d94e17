import { ApiError } from "../errors";
import type { ConversationDto, ParticipantDto } from "../schemas";

export const PREVIEW_CHARS = 140;

export const iso = (ms: number) => new Date(ms).toISOString();
export const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

/** An opaque, random, URL-safe id: 128 bits, so ids can be neither guessed nor enumerated. */
export function newId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** Could this be an id `newId` made? Anything else names nothing, and is refused before storage is touched. */
export const isWellFormedId = (id: string) => /^[A-Za-z0-9_-]{1,64}$/.test(id);

/** The key that makes a pair of users have at most one direct conversation. `|` is not allowed in user ids. */
export function directKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

/** The first 140 characters (code points, so a surrogate pair is never cut in half). */
export function preview(content: string): string {
  return Array.from(content).slice(0, PREVIEW_CHARS).join("");
}

/** The ids a creator may invite: not the creator, who joins as owner anyway. */
export function assertInvitable(callerId: string, userIds: string[], field: string): void {
  if (userIds.includes(callerId)) {
    throw new ApiError("validation_failed", "The request is not valid", [
      { path: field, message: "must not include the caller" },
    ]);
  }
}

/**
 * May `actorId`, whose role is `actorRole`, remove `targetId`? Anyone may leave; owners remove others, except
 * in a direct conversation: there, one who could come back by creating it again can only leave.
 */
export function canRemoveParticipant(
  actorId: string,
  actorRole: ParticipantDto["role"],
  targetId: string,
  direct: boolean,
): boolean {
  return actorId === targetId || (actorRole === "owner" && !direct);
}

export interface ListCursor {
  activityAt: number;
  conversationId: string;
}

export function encodeCursor(cursor: ListCursor): string {
  return btoa(JSON.stringify([cursor.activityAt, cursor.conversationId]))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

export function decodeCursor(raw: string): ListCursor {
  try {
    const json = atob(raw.replaceAll("-", "+").replaceAll("_", "/"));
    const value: unknown = JSON.parse(json);
    if (
      Array.isArray(value) &&
      value.length === 2 &&
      Number.isSafeInteger(value[0]) &&
      typeof value[1] === "string" &&
      value[1].length <= 64
    ) {
      return { activityAt: value[0], conversationId: value[1] };
    }
  } catch {
    // fall through to the one error below
  }
  throw new ApiError("validation_failed", "The request is not valid", [{ path: "cursor", message: "unknown cursor" }]);
}

export interface ConversationRow {
  id: string;
  title: string | null;
  direct: boolean;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  lastSeq: number;
  lastMessageSenderId: string | null;
  lastMessagePreview: string | null;
  lastMessageAt: number | null;
  rev: number;
}

export interface ParticipantRow {
  conversationId: string;
  userId: string;
  role: "owner" | "member";
  joinedAt: number;
  lastReadSeq: number;
  lastDeliveredSeq: number;
}

export function toParticipant(row: ParticipantRow): ParticipantDto {
  return {
    userId: row.userId,
    role: row.role,
    joinedAt: iso(row.joinedAt),
    lastReadSeq: row.lastReadSeq,
    lastDeliveredSeq: row.lastDeliveredSeq,
  };
}

/** The Conversation resource as every member sees it alike: all of it but the viewer's unread count. */
export type SharedConversation = Omit<ConversationDto, "unreadCount">;

export function toSharedConversation(row: ConversationRow, members: ParticipantRow[]): SharedConversation {
  const lastMessage =
    row.lastSeq > 0 && row.lastMessageSenderId !== null && row.lastMessageAt !== null
      ? {
          seq: row.lastSeq,
          senderId: row.lastMessageSenderId,
          preview: row.lastMessagePreview ?? "",
          createdAt: iso(row.lastMessageAt),
        }
      : null;
  return {
    id: row.id,
    title: row.title,
    direct: row.direct,
    createdBy: row.createdBy,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    rev: row.rev,
    lastSeq: row.lastSeq,
    lastMessage,
    participants: members.map(toParticipant),
  };
}

/** The conversation as `viewerId` sees it: their unread count is lastSeq minus their read marker. */
export function forViewer(shared: SharedConversation, viewerId: string): ConversationDto {
  const viewer = shared.participants.find((p) => p.userId === viewerId);
  return { ...shared, unreadCount: Math.max(0, shared.lastSeq - (viewer?.lastReadSeq ?? 0)) };
}

/** The Conversation resource as `viewerId` sees it. */
export const toConversation = (row: ConversationRow, members: ParticipantRow[], viewerId: string): ConversationDto =>
  forViewer(toSharedConversation(row, members), viewerId);
