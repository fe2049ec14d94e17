import { forViewer } from "../domain/conversations";
import {
  changeConversationId,
  changeRev,
  decide,
  type InboxChange,
  type InboxEntryState,
  type UnreadTotals,
} from "../domain/inbox";
import type { InboxFrame } from "../schemas";
import { type Migrations, migrate as migrateSchema } from "../storage/versioned";

// The inbox's own SQLite: one user's conversations as the list shows them, each with the inbox version at
// which it last changed, so that a socket can catch up from any version the inbox still covers. Every
// function takes the storage first and is synchronous.

const MIGRATIONS: Migrations = [
  [
    `CREATE TABLE entries (
       conversation_id TEXT PRIMARY KEY,
       -- the room's version of what is stored here (Conversation.rev)
       rev INTEGER NOT NULL,
       -- this inbox's version when the entry last changed
       version INTEGER NOT NULL,
       removed INTEGER NOT NULL DEFAULT 0,
       last_seq INTEGER NOT NULL DEFAULT 0,
       last_read_seq INTEGER NOT NULL DEFAULT 0,
       -- the Conversation as this user sees it (JSON); null once removed
       conversation TEXT)`,
    "CREATE INDEX entries_by_version ON entries (version)",
    "CREATE TABLE tickets (ticket TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
  ],
];

export const migrate = (storage: DurableObjectStorage) => migrateSchema(storage, MIGRATIONS);

/** Removed conversations kept for catching up; older ones are forgotten, and a socket behind them resyncs. */
export const KEPT_REMOVALS = 1000;

const metaNumber = (sql: SqlStorage, key: string) =>
  Number(sql.exec<{ value: number }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value ?? 0);

const setMeta = (sql: SqlStorage, key: string, value: number) =>
  sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value);

/** Whether the inbox has taken the user's conversations from the directory, which it does once. */
export const isSeeded = (sql: SqlStorage) => metaNumber(sql, "seeded") === 1;

export const markSeeded = (sql: SqlStorage) => setMeta(sql, "seeded", 1);

/** The inbox's version: it grows by one with every change it shows. */
export const currentVersion = (sql: SqlStorage) => metaNumber(sql, "version");

/** Every version up to this one may have been forgotten (a removal pruned): catching up needs a later one. */
export const forgottenUpTo = (sql: SqlStorage) => metaNumber(sql, "forgotten_up_to");

export function unreadTotals(sql: SqlStorage): UnreadTotals {
  return sql
    .exec<{ unreadTotal: number; unreadConversations: number }>(
      `SELECT coalesce(sum(max(last_seq - last_read_seq, 0)), 0) AS unreadTotal,
              coalesce(sum(last_seq > last_read_seq), 0) AS unreadConversations
       FROM entries WHERE removed = 0`,
    )
    .one();
}

/**
 * Applies what rooms reported, in one transaction: each change newer than what the inbox holds takes a new
 * version. Returns the frames for the user's sockets, in version order, with the totals after each.
 */
export function applyChanges(
  storage: DurableObjectStorage,
  userId: string,
  changes: readonly InboxChange[],
): InboxFrame[] {
  return storage.transactionSync(() => {
    const { sql } = storage;
    const frames: InboxFrame[] = [];
    for (const change of changes) {
      const conversationId = changeConversationId(change);
      const stored =
        sql
          .exec<{ rev: number; removed: number }>(
            "SELECT rev, removed FROM entries WHERE conversation_id = ?",
            conversationId,
          )
          .toArray()
          .map((r): InboxEntryState => ({ rev: r.rev, removed: r.removed === 1 }))[0] ?? null;
      const action = decide(stored, change, userId);
      if (action === "ignore") continue;
      if (action === "remember") {
        // Not a change the user saw: no new version, no frame.
        sql.exec(
          "INSERT INTO entries (conversation_id, rev, version, removed) VALUES (?, ?, ?, 1)",
          conversationId,
          changeRev(change),
          currentVersion(sql),
        );
        continue;
      }
      const version = currentVersion(sql) + 1;
      setMeta(sql, "version", version);
      if (action === "store" && change.kind === "conversation") {
        const conversation = forViewer(change.conversation, userId);
        const lastReadSeq = conversation.lastSeq - conversation.unreadCount;
        sql.exec(
          `INSERT OR REPLACE INTO entries (conversation_id, rev, version, removed, last_seq, last_read_seq, conversation)
           VALUES (?, ?, ?, 0, ?, ?, ?)`,
          conversationId,
          conversation.rev,
          version,
          conversation.lastSeq,
          lastReadSeq,
          JSON.stringify(conversation),
        );
        frames.push({ type: "conversation", version, conversation, ...unreadTotals(sql) });
      } else {
        const rev = changeRev(change);
        sql.exec(
          `UPDATE entries SET rev = ?, version = ?, removed = 1, last_seq = 0, last_read_seq = 0, conversation = NULL
           WHERE conversation_id = ?`,
          rev,
          version,
          conversationId,
        );
        frames.push({ type: "conversation_removed", version, conversationId, ...unreadTotals(sql) });
      }
    }
    if (frames.some((f) => f.type === "conversation_removed")) forgetOldRemovals(sql);
    return frames;
  });
}

/** Keeps the newest removals only; catching up from before the oldest forgotten one becomes a resync. */
function forgetOldRemovals(sql: SqlStorage): void {
  const forgotten = sql
    .exec<{ version: number }>(
      `DELETE FROM entries WHERE removed = 1 AND conversation_id NOT IN
         (SELECT conversation_id FROM entries WHERE removed = 1 ORDER BY version DESC LIMIT ?)
       RETURNING version`,
      KEPT_REMOVALS,
    )
    .toArray();
  if (forgotten.length === 0) return;
  setMeta(sql, "forgotten_up_to", Math.max(forgottenUpTo(sql), ...forgotten.map((r) => r.version)));
}

/** The latest state of every conversation that changed after `since`, in version order, as frames. */
export function changesSince(sql: SqlStorage, since: number): InboxFrame[] {
  const totals = unreadTotals(sql);
  return sql
    .exec<{ conversationId: string; version: number; conversation: string | null }>(
      `SELECT conversation_id AS conversationId, version, conversation FROM entries
       WHERE version > ? ORDER BY version`,
      since,
    )
    .toArray()
    .map(
      (r): InboxFrame =>
        r.conversation === null
          ? { type: "conversation_removed", version: r.version, conversationId: r.conversationId, ...totals }
          : { type: "conversation", version: r.version, conversation: JSON.parse(r.conversation), ...totals },
    );
}
