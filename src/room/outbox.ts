import { type ParticipantRow, toSharedConversation } from "../domain/conversations";
import type { InboxChange } from "../domain/inbox";
import { conversationRow, type RoomConversation, readParticipants } from "./log";

// The outbox: every commit that changes the conversation writes a row (its new version) in the same local
// transaction. The pump sends D1 the conversation as it is now, once for all the rows waiting, and deletes
// them once D1 has it. A replay is harmless: D1 takes a projection only if it is newer than the one it has.
// The members' inboxes are fed from the same versions, on their own: the room remembers the newest version
// every inbox has, so D1 being down does not hold the inboxes back, nor the other way round.

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

/** After `failures` failures in a row: when to try again (exponential backoff, at most 30 s). */
const backoffUntil = (now: number, failures: number) =>
  now + Math.min(MAX_BACKOFF_MS, PUMP_COALESCE_MS * 2 ** failures);

/** A pump failed: when to try again. */
export function failed(sql: SqlStorage, now: number): number {
  const failures = metaNumber(sql, "pump_failures") + 1;
  sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('pump_failures', ?)", failures);
  return backoffUntil(now, failures);
}

const metaNumber = (sql: SqlStorage, key: string) =>
  Number(sql.exec<{ value: number | null }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value ?? 0);

/**
 * What the inboxes are told now: the conversation as it stands, to every member when some version has not
 * been sent yet (`version`), and to the lagging inboxes due for another try; its removal to those not in it.
 */
export interface InboxFeed {
  /** The version this feed brings every inbox to; null when it only retries lagging ones. */
  version: number | null;
  deliveries: { userId: string; change: InboxChange }[];
}

/** Whether some inbox lacks the conversation's current version (a new room has none yet). */
export function inboxesBehind(sql: SqlStorage): boolean {
  const rev = sql.exec<{ rev: number }>("SELECT rev FROM conversation").toArray()[0]?.rev;
  return rev !== undefined && metaNumber(sql, "inbox_version") < rev;
}

/** The inbox feed due at `now`, or null when every inbox has the current version and none is due a retry. */
export function inboxFeed(sql: SqlStorage, conversation: RoomConversation, now: number): InboxFeed | null {
  const fed = metaNumber(sql, "inbox_version");
  const behind = fed < conversation.rev;
  const recipients = new Set(
    sql
      .exec<{ userId: string }>("SELECT user_id AS userId FROM inbox_lagging WHERE not_before <= ?", now)
      .toArray()
      .map((r) => r.userId),
  );
  if (!behind && recipients.size === 0) return null;
  const shared = toSharedConversation(conversationRow(sql, conversation), readParticipants(sql, conversation.id));
  const members = new Set(shared.participants.map((p) => p.userId));
  if (behind) {
    for (const userId of members) recipients.add(userId);
    for (const { userId } of sql.exec<{ userId: string }>("SELECT user_id AS userId FROM departed WHERE rev > ?", fed))
      recipients.add(userId);
  }
  const current: InboxChange = { kind: "conversation", conversation: shared };
  const removed: InboxChange = { kind: "removed", conversationId: conversation.id, rev: conversation.rev };
  return {
    version: behind ? conversation.rev : null,
    deliveries: [...recipients].map((userId) => ({ userId, change: members.has(userId) ? current : removed })),
  };
}

/** Every inbox has been sent every version up to `version` (those whose call failed are lagging). */
export function inboxesFed(sql: SqlStorage, version: number): void {
  sql.exec(
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('inbox_version', max(?, coalesce((SELECT value FROM meta WHERE key = 'inbox_version'), 0)))",
    version,
  );
}

// An inbox whose call failed lags on its own: the feed goes on for the others, and the lagging one is sent
// the conversation as it stands (or its removal) again, with its own backoff, until it takes it.

/** The next time a lagging inbox is due, or null when none lags. */
export function nextLaggingAt(sql: SqlStorage): number | null {
  return sql.exec<{ at: number | null }>("SELECT min(not_before) AS at FROM inbox_lagging").one().at ?? null;
}

/** After a feed: those whose call failed lag (once more), those who took it are caught up. */
export function settleInboxes(sql: SqlStorage, took: Iterable<string>, refused: Iterable<string>, now: number): void {
  for (const userId of took) sql.exec("DELETE FROM inbox_lagging WHERE user_id = ?", userId);
  for (const userId of refused) {
    const row = sql
      .exec<{ failures: number }>("SELECT failures FROM inbox_lagging WHERE user_id = ?", userId)
      .toArray()[0];
    const failures = (row?.failures ?? 0) + 1;
    sql.exec(
      "INSERT OR REPLACE INTO inbox_lagging (user_id, failures, not_before) VALUES (?, ?, ?)",
      userId,
      failures,
      backoffUntil(now, failures),
    );
  }
}
