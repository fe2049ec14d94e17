// A Durable Object's SQLite schema, versioned in code: each Object migrates itself when it wakes, in its
// constructor (one read of the version when there is nothing to do). Used by the room and the inbox alike.

/** Each entry takes the schema from the version before it (index + 0) to index + 1. Append, never edit. */
export type Migrations = readonly (readonly string[])[];

/** The schema version a storage is at: 0 for a new Object (or one that kept key-value data only). */
export function schemaVersion(sql: SqlStorage): number {
  const exists = sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray();
  if (exists.length === 0) return 0;
  const row = sql.exec("SELECT value FROM meta WHERE key = 'schema_version'").toArray()[0];
  return Number(row?.value ?? 0);
}

/** Brings the storage to the newest schema, each step in its own transaction. Every schema has `meta`. */
export function migrate(storage: DurableObjectStorage, migrations: Migrations): void {
  for (let version = schemaVersion(storage.sql); version < migrations.length; version++) {
    const steps = migrations[version] ?? [];
    storage.transactionSync(() => {
      for (const statement of steps) storage.sql.exec(statement);
      storage.sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", version + 1);
    });
  }
}
