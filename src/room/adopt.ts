import type { Db } from "../db/conversations";
import { findDirectoryEntry } from "../db/conversations";
import { legacyMessagesPage } from "../db/messages";
import { initConversation } from "./log";

// A room whose storage is empty takes its conversation from the directory: one made by a request that failed
// between D1 and the room, or one of version 0.1, whose messages are in D1. Those are imported in pages, each
// page its own local transaction, so an eviction midway resumes where it stopped; the conversation row is
// written last, and a room serves nothing until it has it.

const IMPORT_PAGE = 500;
/** 0.1 kept delivered markers that had not reached D1 yet under this key of the room's storage. */
const LEGACY_DELIVERED = "delivered";
const LEGACY_KEYS = ["conversationId", LEGACY_DELIVERED, "typing"];

/** Adopts the conversation from D1; false when D1 has no such conversation (nothing is written then). */
export async function adoptFromDirectory(
  storage: DurableObjectStorage,
  db: Db,
  conversationId: string,
): Promise<boolean> {
  const entry = await findDirectoryEntry(db, conversationId);
  if (!entry) return false;
  const { sql } = storage;
  let imported = sql.exec<{ seq: number | null }>("SELECT max(seq) AS seq FROM messages").one().seq ?? 0;
  while (imported < entry.conversation.lastSeq) {
    const page = await legacyMessagesPage(db, conversationId, imported, IMPORT_PAGE);
    if (page.length === 0) break;
    storage.transactionSync(() => {
      for (const m of page) {
        sql.exec(
          `INSERT OR IGNORE INTO messages (seq, id, sender_id, content, local_id, sent_hash, created_at, edited_at, deleted_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          m.seq,
          m.id,
          m.senderId,
          m.content,
          m.localId,
          m.sentHash,
          m.createdAt,
          m.editedAt,
          m.deletedAt,
        );
      }
    });
    imported = page[page.length - 1]?.seq ?? imported;
  }
  if (sql.exec("SELECT 1 FROM conversation").toArray().length > 0) return true; // adopted meanwhile

  const pending = storage.kv.get<{ markers?: Record<string, number> }>(LEGACY_DELIVERED)?.markers ?? {};
  const { conversation: c, members } = entry;
  initConversation(
    storage,
    {
      id: conversationId,
      title: c.title,
      direct: c.direct,
      createdBy: c.createdBy,
      createdAt: c.createdAt,
      updatedAt: c.updatedAt,
      lastSeq: Math.max(c.lastSeq, imported),
      // Its rev goes on from the directory's, which clients may hold: a newer state must look newer.
      rev: c.rev,
      members: members.map(({ conversationId: _, ...m }) => ({
        ...m,
        lastDeliveredSeq: Math.max(m.lastDeliveredSeq, Math.min(pending[m.userId] ?? 0, c.lastSeq)),
      })),
    },
    Date.now(),
  );
  for (const key of LEGACY_KEYS) storage.kv.delete(key);
  return true;
}
