import { type Migrations, migrate as migrateSchema } from "../storage/versioned";

// The room's own SQLite: the system of record of one conversation. Versioned in code; a room migrates itself
// when it wakes, in its constructor (src/storage/versioned.ts).

/** Each entry takes the schema from the version before it (index + 0) to index + 1. Append, never edit. */
const MIGRATIONS: Migrations = [
  [
    `CREATE TABLE conversation (
       id TEXT PRIMARY KEY,
       title TEXT,
       direct INTEGER NOT NULL DEFAULT 0,
       created_by TEXT NOT NULL,
       created_at INTEGER NOT NULL,
       updated_at INTEGER NOT NULL,
       last_seq INTEGER NOT NULL DEFAULT 0,
       rev INTEGER NOT NULL DEFAULT 0)`,
    `CREATE TABLE participants (
       user_id TEXT PRIMARY KEY,
       role TEXT NOT NULL,
       joined_at INTEGER NOT NULL,
       last_read_seq INTEGER NOT NULL DEFAULT 0,
       last_delivered_seq INTEGER NOT NULL DEFAULT 0,
       -- the delivered marker as last announced to the senders' sockets (receipts go out within a second)
       announced_delivered_seq INTEGER NOT NULL DEFAULT 0)`,
    // Users who left or were removed: a repeated removal is then answered (and repaired), not refused.
    "CREATE TABLE departed (user_id TEXT PRIMARY KEY, at INTEGER NOT NULL)",
    `CREATE TABLE messages (
       seq INTEGER PRIMARY KEY,
       id TEXT NOT NULL UNIQUE,
       sender_id TEXT NOT NULL,
       content TEXT NOT NULL,
       local_id TEXT,
       -- the content as first sent, kept once an edit or a delete changes it (so a retry is still a retry)
       sent_content TEXT,
       -- 0.1 kept a SHA-256 of it instead: set on imported messages only
       sent_hash TEXT,
       created_at INTEGER NOT NULL,
       edited_at INTEGER,
       deleted_at INTEGER)`,
    "CREATE UNIQUE INDEX messages_by_local_id ON messages (sender_id, local_id) WHERE local_id IS NOT NULL",
    // What D1 (and later the inboxes) must learn, written in the same transaction as the change.
    "CREATE TABLE outbox (version INTEGER PRIMARY KEY, at INTEGER NOT NULL)",
    "CREATE TABLE tickets (ticket TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
  ],
  [
    // The version that removed each departed user: their inbox is told once, when the feed reaches it.
    "ALTER TABLE departed ADD COLUMN rev INTEGER NOT NULL DEFAULT 0",
    // Inboxes whose last delivery failed: retried on their own, with backoff, without holding the others back.
    `CREATE TABLE inbox_lagging (
       user_id TEXT PRIMARY KEY,
       failures INTEGER NOT NULL,
       not_before INTEGER NOT NULL)`,
  ],
  [
    // Where a departed user had read up to: one who comes back to a direct conversation finds unread what
    // was said while away. Unknown (null) for those who left before this version.
    "ALTER TABLE departed ADD COLUMN last_read_seq INTEGER",
  ],
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Brings the room's storage to the current schema. */
export const migrate = (storage: DurableObjectStorage) => migrateSchema(storage, MIGRATIONS);
