import { isWellFormedId } from "../domain/conversations";
import type { Env } from "../env";
import { notFound } from "../errors";
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
