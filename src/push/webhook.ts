import type { PushConfig } from "./config";
import { type Delivery, post } from "./http";
import type { Notification } from "./notification";

/** The body of a webhook call: one notification for one user. */
export interface WebhookEvent extends Notification {
  /** The same on every retry of this delivery, so that the receiver can drop duplicates. */
  id: string;
  userId: string;
}

const encoder = new TextEncoder();

/**
 * The signature of a webhook call: HMAC-SHA256 with the webhook secret over `timestamp + "." + body`, in hex.
 * The receiver recomputes it, compares in constant time, and refuses timestamps more than a few minutes old.
 */
export async function signWebhook(secret: string, timestamp: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** POSTs the event to the webhook, signed; headers `X-Push-Timestamp` (Unix seconds) and `X-Push-Signature`. */
export async function sendWebhook(
  event: WebhookEvent,
  webhook: NonNullable<PushConfig["webhook"]>,
  now = Date.now(),
): Promise<Delivery> {
  const body = JSON.stringify(event);
  const timestamp = Math.floor(now / 1000);
  const signature = await signWebhook(webhook.secret, timestamp, body);
  return post(
    webhook.url,
    {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-Push-Id": event.id,
        "X-Push-Timestamp": String(timestamp),
        "X-Push-Signature": `sha256=${signature}`,
      },
      body,
    },
    "webhook",
  );
}
