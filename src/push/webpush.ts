import { buildPushPayload } from "@block65/webcrypto-web-push";
import type { PushConfig } from "./config";
import { type Delivery, post } from "./http";
import type { Notification } from "./notification";
import type { SubscriptionRow } from "./store";

/** How long a push service keeps a notification for a device that is offline: a chat is stale after a day. */
const TTL_SECONDS = 24 * 3600;

/**
 * Sends one notification as a Web Push: the payload encrypted for the subscription (RFC 8291, aes128gcm)
 * and the request signed with the VAPID key (RFC 8292). The conversation is the Topic, so a push service
 * that still holds an undelivered notification of the same conversation replaces it with this one.
 */
export async function sendWebPush(
  subscription: SubscriptionRow,
  notification: Notification,
  vapid: NonNullable<PushConfig["vapid"]>,
): Promise<Delivery> {
  let request: Awaited<ReturnType<typeof buildPushPayload>>;
  try {
    request = await buildPushPayload(
      {
        data: { ...notification },
        options: { ttl: TTL_SECONDS, urgency: "normal", topic: notification.conversationId.slice(0, 32) },
      },
      { endpoint: subscription.endpoint, expirationTime: null, keys: subscription },
      vapid,
    );
  } catch (err) {
    // Bad VAPID settings, most likely (subscription keys are checked when stored): keep the subscription.
    console.error("web push not built", err);
    return { outcome: "failed" };
  }
  return post(subscription.endpoint, { method: "POST", headers: request.headers, body: request.body }, "webpush");
}
