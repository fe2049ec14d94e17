import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { drizzle } from "drizzle-orm/d1";
import type { ConversationRoom } from "../src/room/room";

/**
 * Where an injected D1 failure strikes: `before-commit` fails the batch without running it (D1 refused it);
 * `after-commit` runs it and then loses the reply (the connection dropped after D1 applied it), so the room
 * cannot know whether it was stored.
 *
 * Client writes (sends, edits, deletes, read markers) commit in the room's own SQLite; D1 is written only by
 * the room's outbox pump (src/db/projection.ts applyProjection, one batch into `participants` and
 * `conversations`). So these failures strike the pump's batches: they delay the list, and nothing else.
 */
export type FaultMode = "before-commit" | "after-commit";

/** Counts across the file, for the figures of a run: failures armed (batches), and batches that failed. */
export const faultStats = { armed: 0, fired: 0 };

const INJECTED = "D1_ERROR: Network connection lost.";

/** Statements of the outbox pump's projection: it writes the list's tables, nothing else. */
const PROJECTION_WRITE = /^(DELETE FROM participants|INSERT INTO participants|UPDATE conversations)\b/i;

const normalized = (text: string) => text.replace(/\s+/g, " ").trim();

/**
 * A D1Database that is the real one, except that its next `batches` batches writing the list projection
 * fail as `mode` says (D1 failing for a while). Other statements (reads, such as an adoption's) are left alone.
 */
export function flakyD1(real: D1Database, mode: FaultMode, batches = 1, onFire: () => void = () => {}): D1Database {
  let left = batches;
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
      if (left > 0 && statements.some((s) => PROJECTION_WRITE.test(sqlOf.get(s) ?? ""))) {
        left--;
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

/**
 * Makes the next `batches` D1 batches of the room's outbox pump fail as `mode` says (until the room is
 * evicted: a new instance has the real D1). Returns a counter of the failures that struck so far.
 */
export async function failPump(
  conversationId: string,
  mode: FaultMode,
  batches = 1,
): Promise<{ readonly fired: number; readonly left: number }> {
  faultStats.armed += batches;
  const state = { fired: 0, left: batches };
  await runInDurableObject(env.ROOMS.getByName(conversationId), (instance: ConversationRoom) => {
    instance.db = drizzle(
      flakyD1(env.DB, mode, batches, () => {
        state.fired++;
        state.left--;
        faultStats.fired++;
      }),
    );
  });
  return state;
}

/** Arms a failure of the room's next D1 write: since the room owns its data, that is its pump's next batch. */
export async function failNextWrite(conversationId: string, mode: FaultMode): Promise<void> {
  await failPump(conversationId, mode, 1);
}

/**
 * Makes every D1 call of the conversation's room fail as D1 does when it has lost its connection, until
 * `restore()` puts the real one back (an eviction does too). `failures()` counts the calls it refused.
 */
export async function d1Outage(conversationId: string) {
  let failures = 0;
  const lost = () => {
    failures++;
    return Promise.reject(new Error(INJECTED));
  };
  const statement = {
    bind: () => statement,
    first: lost,
    run: lost,
    all: lost,
    raw: lost,
  } as unknown as D1PreparedStatement;
  const down = { prepare: () => statement, exec: lost, batch: lost } as unknown as D1Database;
  const stub = env.ROOMS.getByName(conversationId);
  await runInDurableObject(stub, (instance: ConversationRoom) => {
    instance.db = drizzle(down);
  });
  return {
    failures: () => failures,
    restore: () =>
      runInDurableObject(stub, (instance: ConversationRoom) => {
        instance.db = drizzle(env.DB);
      }),
  };
}
