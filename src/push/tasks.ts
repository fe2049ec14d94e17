import type { Env } from "../env";
import { readPushConfig } from "./config";
import type { Notification } from "./notification";

/**
 * The messages of the push queue. A `check` is sent by a conversation's room after a commit stored messages
 * that someone without a socket has not read; it runs after the push delay and decides who gets what. A
 * `deliver` is one notification to one channel of one user that failed in a way worth retrying.
 */
export type PushTask =
  | { kind: "check"; conversationId: string; seq: number }
  | {
      kind: "deliver";
      conversationId: string;
      userId: string;
      notification: Notification;
      channel: { type: "webpush"; endpoint: string } | { type: "webhook"; deliveryId: string };
      /** The attempt this task makes when first received (the check made the first one). */
      attempt: number;
    };

/** Schedules the push check of a committed message; never throws, since sending must not depend on it. */
export async function schedulePushCheck(env: Env, check: { conversationId: string; seq: number }): Promise<void> {
  try {
    const task: PushTask = { kind: "check", ...check };
    await env.PUSH_QUEUE?.send(task, { delaySeconds: readPushConfig(env).delaySeconds });
  } catch (err) {
    console.error("push check not scheduled", err);
  }
}
