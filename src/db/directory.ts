import { drizzle } from "drizzle-orm/d1";
import type { Env } from "../env";
import type { Db } from "./conversations";

/**
 * The directory (D1) as the Worker and the rooms use it. `D1_DELAY_MS`, unset in production, adds that much
 * latency to every D1 call, as a far-away primary would: the bench measures that the send path does not feel it.
 */
export function directory(env: Pick<Env, "DB" | "D1_DELAY_MS">): Db {
  const delayMs = Number(env.D1_DELAY_MS ?? 0);
  return drizzle(Number.isFinite(delayMs) && delayMs > 0 ? delayed(env.DB, delayMs) : env.DB);
}

function delayed(real: D1Database, ms: number): D1Database {
  const wait = () => new Promise((resolve) => setTimeout(resolve, ms));
  const statement = (stmt: D1PreparedStatement): D1PreparedStatement =>
    new Proxy(stmt, {
      get(target, key) {
        const value = Reflect.get(target, key, target);
        if (key === "bind") return (...values: unknown[]) => statement(target.bind(...values));
        if (key === "all" || key === "run" || key === "first" || key === "raw") {
          return async (...args: unknown[]) => {
            await wait();
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  return {
    prepare: (query: string) => statement(real.prepare(query)),
    batch: async <T = unknown>(statements: D1PreparedStatement[]) => {
      await wait();
      return real.batch<T>(statements);
    },
    exec: async (query: string) => {
      await wait();
      return real.exec(query);
    },
    withSession: (constraint?: string) => real.withSession(constraint),
    dump: () => real.dump(),
  } as D1Database;
}
