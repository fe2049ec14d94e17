import { newId } from "../domain/conversations";

// Single-use tickets for browsers, which cannot set headers on a WebSocket: bound to (user, this room).

export function issueTicket(sql: SqlStorage, userId: string, ttlSeconds: number, now: number) {
  sql.exec("DELETE FROM tickets WHERE expires_at <= ?", now);
  const ticket = `${newId()}${newId()}`;
  const expiresAt = now + ttlSeconds * 1000;
  sql.exec("INSERT INTO tickets (ticket, user_id, expires_at) VALUES (?, ?, ?)", ticket, userId, expiresAt);
  return { ticket, expiresAt };
}

/** The user a ticket was issued to, once: a ticket is deleted as it is redeemed. */
export function redeemTicket(sql: SqlStorage, ticket: string, now: number): string | null {
  const row = sql
    .exec<{ userId: string; expiresAt: number }>(
      "DELETE FROM tickets WHERE ticket = ? RETURNING user_id AS userId, expires_at AS expiresAt",
      ticket,
    )
    .toArray()[0];
  return row && row.expiresAt > now ? row.userId : null;
}
