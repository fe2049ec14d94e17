import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import type { ConversationRoom } from "../src/room";

/**
 * Where an injected D1 failure strikes: `before-commit` fails the batch without running it (D1 refused it);
 * `after-commit` runs it and then loses the reply (the connection dropped after D1 applied it), so the room
 * cannot know whether it was stored.
 */
export type FaultMode = "before-commit" | "after-commit";

/** Counts across the file, for the figures of a run. */
export const faultStats = { armed: 0, fired: 0 };

const INJECTED = "D1_ERROR: Network connection lost.";

/** Statements of the writes a client asks for: sends, edits, deletes and read markers (not the alarm's delivered flush). */
const CLIENT_WRITE = /^(INSERT INTO messages|UPDATE messages|UPDATE participants SET last_read_seq)/i;

const normalized = (text: string) => text.replace(/\s+/g, " ").trim();

/** A D1Database that is the real one, except that its next batch holding a client write fails as `mode` says. */
export function flakyD1(real: D1Database, mode: FaultMode, onFire: () => void = () => {}): D1Database {
  let armed = true;
  const sqlOf = new WeakMap<D1PreparedStatement, string>();
  const remember = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement => {
    sqlOf.set(stmt, sql);
    const bind = stmt.bind.bind(stmt);
    (stmt as unknown as { bind: (...values: unknown[]) => D1PreparedStatement }).bind = (...values: unknown[]) =>
      remember(bind(...values), sql);
    return stmt;
  };
  return {
    prepare: (query: string) => remember(real.prepare(query), normalized(query)),
    batch: async <T = unknown>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]> => {
      if (armed && statements.some((s) => CLIENT_WRITE.test(sqlOf.get(s) ?? ""))) {
        armed = false;
        onFire();
        if (mode === "after-commit") await real.batch<T>(statements);
        throw new Error(INJECTED);
      }
      return real.batch<T>(statements);
    },
    exec: (query: string) => real.exec(query),
    withSession: () => real.withSession(),
    dump: () => real.dump(),
  } satisfies D1Database;
}

/** Arms a failure of the next client write of the conversation's room (until the room is evicted). */
export async function failNextWrite(conversationId: string, mode: FaultMode): Promise<void> {
  faultStats.armed++;
  await runInDurableObject(env.ROOMS.getByName(conversationId), (instance: ConversationRoom) => {
    instance.db = drizzle(
      flakyD1(env.DB, mode, () => {
        faultStats.fired++;
      }),
    );
  });
}
