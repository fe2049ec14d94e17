import type { Env } from "../env";
import { type RoomResult, roomError } from "../room";

/** The conversation's Durable Object, by name: one per conversation, wherever it is asked for. */
export const roomOf = (env: Env, conversationId: string) => env.ROOMS.getByName(conversationId);

/** The value of a room call, or its error thrown as the one ApiError. */
export function unwrap<T>(result: RoomResult<T>): T {
  if (!result.ok) throw roomError(result);
  return result.value;
}
