import type { ParticipantRow } from "../domain/conversations";
import { conversationRow, type RoomConversation, readParticipants } from "./log";

// The outbox: every commit that changes the conversation writes a row (its new version) in the same local
// transaction. The pump sends D1 the conversation as it is now, once for all the rows waiting, and deletes
// them once D1 has it. A replay is harmless: D1 takes a projection only if it is newer than the one it has.

/** A busy room writes D1 at most this often, whatever its message rate. */
export const PUMP_COALESCE_MS = 250;
const MAX_BACKOFF_MS = 30_000;

/** What the directory keeps of a conversation: the list reads it. */
export interface Projection {
  conversationId: string;
  /** The room's version of this state; D1 ignores anything not newer than what it has. */
  version: number;
  title: string | null;
  updatedAt: number;
  lastSeq: number;
  lastMessageSenderId: string | null;
  lastMessagePreview: string | null;
  lastMessageAt: number | null;
  members: Omit<ParticipantRow, "conversationId">[];
}

/** The newest version waiting for D1, or null when D1 has everything. */
export function waitingVersion(sql: SqlStorage): number | null {
  const row = sql.exec<{ v: number | null }>("SELECT max(version) AS v FROM outbox").one();
  return row.v ?? null;
}

/** The state to send for the waiting versions: the conversation as it stands, whose version is its rev. */
export function projectionOf(sql: SqlStorage, conversation: RoomConversation): Projection {
  const row = conversationRow(sql, conversation);
  return {
    conversationId: conversation.id,
    version: conversation.rev,
    title: row.title,
    updatedAt: row.updatedAt,
    lastSeq: row.lastSeq,
    lastMessageSenderId: row.lastMessageSenderId,
    lastMessagePreview: row.lastMessagePreview,
    lastMessageAt: row.lastMessageAt,
    members: readParticipants(sql, conversation.id).map(({ conversationId: _, ...m }) => m),
  };
}

/** D1 has every version up to `version`: those rows are done. */
export function delivered(sql: SqlStorage, version: number): void {
  sql.exec("DELETE FROM outbox WHERE version <= ?", version);
  sql.exec("DELETE FROM meta WHERE key = 'pump_failures'");
}

/** A pump failed: when to try again (exponential backoff, at most 30 s). */
export function failed(sql: SqlStorage, now: number): number {
  const row = sql.exec<{ value: number | null }>("SELECT value FROM meta WHERE key = 'pump_failures'").toArray()[0];
  const failures = Number(row?.value ?? 0) + 1;
  sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('pump_failures', ?)", failures);
  return now + Math.min(MAX_BACKOFF_MS, PUMP_COALESCE_MS * 2 ** failures);
}
