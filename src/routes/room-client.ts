import { isWellFormedId } from "../domain/conversations";
import type { Env } from "../env";
import { ApiError, isStorageUnavailable, notFound } from "../errors";
import { type RoomResult, roomError } from "../room/room";

/**
 * The conversation's Durable Object, by name: one per conversation. An id that no conversation can have is
 * not found here, without waking anything.
 */
export function roomOf(env: Env, conversationId: string) {
  if (!isWellFormedId(conversationId)) throw notFound();
  return env.ROOMS.getByName(conversationId);
}

/** The value of a room call, or its error thrown as the one ApiError. */
export function unwrap<T>(result: RoomResult<T>): T {
  if (!result.ok) throw roomError(result);
  return result.value;
}

/**
 * A call that failed between the Worker and the room (a restart, a lost connection): it may have run. An
 * overloaded room is not called again at once.
 */
const lostOnTheWay = (err: unknown) =>
  err instanceof Error &&
  Reflect.get(err, "overloaded") !== true &&
  (Reflect.get(err, "retryable") === true || isStorageUnavailable(err));

/**
 * An idempotent room call, tried again once when the first was lost on the way. When the second is lost too,
 * nobody can tell whether it ran: `503 unavailable` with `details.outcome: "unknown"` (guarantee 9).
 */
export async function retriedOnce<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!lostOnTheWay(err)) throw err;
  }
  try {
    return await run();
  } catch (err) {
    if (!lostOnTheWay(err)) throw err;
    throw new ApiError(
      "unavailable",
      "The conversation could not be reached; it may have been stored",
      { outcome: "unknown" },
      1,
    );
  }
}
