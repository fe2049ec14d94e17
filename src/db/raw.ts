import type { SQL } from "drizzle-orm";
import { SQLiteAsyncDialect } from "drizzle-orm/sqlite-core";
import type { Db } from "./conversations";

// drizzle 0.45's D1 batch cannot run `sql` statements that have parameters (it looks for a prepared
// statement they do not have), so statements written as SQL are rendered by drizzle and batched by D1.

const dialect = new SQLiteAsyncDialect();

/** Runs SQL statements as one atomic D1 batch (one round trip) and returns each one's rows. */
export async function batchSql<Row = Record<string, unknown>>(db: Db, statements: SQL[]): Promise<Row[][]> {
  const d1 = db.$client;
  const prepared = statements.map((statement) => {
    const { sql, params } = dialect.sqlToQuery(statement);
    return d1.prepare(sql).bind(...params);
  });
  const results = await d1.batch<Row>(prepared);
  return results.map((result) => result.results ?? []);
}
