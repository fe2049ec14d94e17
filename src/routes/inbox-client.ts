import { rateLimited } from "../domain/buckets";
import type { Env } from "../env";
import type { UserAction } from "../inbox/inbox";

/** A user's inbox: one Durable Object per user, by name. */
export const inboxOf = (env: Env, userId: string) => env.INBOXES.getByName(userId);

const REFUSALS: Record<UserAction, string> = {
  create: "Too many new conversations; slow down",
  membership: "Too many participant changes; slow down",
};

/** Spends one of the user's tokens for this action (kept by their inbox), or throws `429 rate_limited`. */
export async function spend(env: Env, userId: string, action: UserAction): Promise<void> {
  const waitMs = await inboxOf(env, userId).take(action);
  if (waitMs > 0) throw rateLimited(REFUSALS[action], waitMs);
}
