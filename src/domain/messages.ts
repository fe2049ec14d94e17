import type { MessageDto } from "../schemas";
import { iso, isoOrNull } from "./conversations";

export interface MessageRow {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  content: string;
  localId: string | null;
  createdAt: number;
  editedAt: number | null;
  deletedAt: number | null;
}

export function toMessage(row: MessageRow): MessageDto {
  return {
    id: row.id,
    conversationId: row.conversationId,
    seq: row.seq,
    senderId: row.senderId,
    content: row.deletedAt === null ? row.content : "",
    localId: isServerKey(row.localId) ? null : row.localId,
    createdAt: iso(row.createdAt),
    editedAt: isoOrNull(row.editedAt),
    deletedAt: isoOrNull(row.deletedAt),
  };
}

/** The fingerprint of a message's content as sent, which outlives edits and deletes (base64 of SHA-256). */
export async function contentHash(content: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(content));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/**
 * A REST send without a localId gets one of the Worker's, so that the Worker can retry it safely itself. It
 * starts with `~`, which no client's localId can (`LOCAL_ID`), and it is never shown: such a message has none.
 */
export const serverKey = () => `~${crypto.randomUUID()}`;
const isServerKey = (localId: string | null) => localId?.startsWith("~") === true;

/** After a reconnect from `since`: replay what was missed, or, past the replay limit, ask for REST paging. */
export function catchUpPlan(since: number, lastSeq: number, maxReplay: number): "replay" | "resync" | "none" {
  if (since >= lastSeq) return "none";
  return lastSeq - since > maxReplay ? "resync" : "replay";
}

/** Typing ends on its own this long after its last refresh. */
export const TYPING_TTL_MS = 5_000;
/** A socket silent this long (no frame, no `ping`) is taken for dead and closed. */
export const IDLE_SOCKET_MS = 120_000;
/** Delivered markers are announced to the senders' sockets at most this late. */
export const DELIVERED_FLUSH_MS = 1_000;
