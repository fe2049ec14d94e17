/**
 * A D1Database that behaves like the one it wraps and records what reaches it: every statement executed (its
 * SQL and bound values) and every round trip. A `batch()` is one round trip; `all`/`run`/`first`/`raw` on a
 * statement executed on its own is one round trip each; `exec` is one.
 *
 * The statements handed out are the real D1PreparedStatement objects made by the real `prepare()`/`bind()`,
 * with their methods patched on the instance (no Proxy), so the real `batch()` accepts them.
 */

export interface ExecutedStatement {
  sql: string;
  params: unknown[];
  /** `batch`, or the statement method that ran it on its own. */
  via: "batch" | "all" | "run" | "first" | "raw" | "exec";
}

export interface D1Recording {
  /** Use this in place of the real database. */
  readonly db: D1Database;
  /** Round trips since the last `reset()`. */
  readonly roundTrips: number;
  /** Statements executed since the last `reset()`, in order. */
  readonly executed: readonly ExecutedStatement[];
  reset(): void;
}

const EXECUTE_METHODS = ["all", "run", "first", "raw"] as const;

export function recordD1(real: D1Database): D1Recording {
  let roundTrips = 0;
  let executed: ExecutedStatement[] = [];
  /** The SQL and values of every statement handed out, for reading them back when they are batched. */
  const described = new WeakMap<D1PreparedStatement, { sql: string; params: unknown[] }>();

  const instrument = (stmt: D1PreparedStatement, sql: string, params: unknown[]): D1PreparedStatement => {
    described.set(stmt, { sql, params });
    const patchable = stmt as unknown as Record<string, (...args: unknown[]) => unknown>;
    const bind = stmt.bind.bind(stmt);
    patchable.bind = (...values: unknown[]) => instrument(bind(...values), sql, values);
    for (const method of EXECUTE_METHODS) {
      const original = (stmt[method] as (...args: unknown[]) => Promise<unknown>).bind(stmt);
      let depth = 0;
      patchable[method] = async (...args: unknown[]) => {
        // One call is one round trip, even if the binding implements one method with another.
        if (depth === 0) {
          roundTrips++;
          executed.push({ sql, params, via: method });
        }
        depth++;
        try {
          return await original(...args);
        } finally {
          depth--;
        }
      };
    }
    return stmt;
  };

  const db = {
    prepare(query: string): D1PreparedStatement {
      return instrument(real.prepare(query), query, []);
    },
    async batch<T = unknown>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]> {
      roundTrips++;
      for (const stmt of statements) {
        const description = described.get(stmt);
        if (!description) throw new Error("a statement passed to batch() was not made by this database");
        executed.push({ ...description, via: "batch" });
      }
      return real.batch<T>(statements);
    },
    async exec(query: string): Promise<D1ExecResult> {
      roundTrips++;
      executed.push({ sql: query, params: [], via: "exec" });
      return real.exec(query);
    },
    withSession(): D1DatabaseSession {
      throw new Error("withSession is not recorded");
    },
    dump(): Promise<ArrayBuffer> {
      return real.dump();
    },
  } satisfies D1Database;

  return {
    db,
    get roundTrips() {
      return roundTrips;
    },
    get executed() {
      return executed;
    },
    reset() {
      roundTrips = 0;
      executed = [];
    },
  };
}

/** The Worker's bindings with some of them replaced (the test `env` has no enumerable keys to spread). */
export function withBindings(env: Cloudflare.Env, overrides: Partial<Cloudflare.Env>): Cloudflare.Env {
  const copy = Object.fromEntries(Object.getOwnPropertyNames(env).map((key) => [key, Reflect.get(env, key)]));
  return { ...copy, ...overrides } as Cloudflare.Env;
}
