import { classifyStatus, type DeliveryOutcome, parseRetryAfter } from "./notification";

export interface Delivery {
  outcome: DeliveryOutcome;
  status?: number;
  retryAfterSeconds?: number;
}

/** POSTs and classifies the answer; a network failure is worth retrying. */
export async function post(url: string, init: RequestInit, channel: "webpush" | "webhook"): Promise<Delivery> {
  try {
    const res = await fetch(url, { ...init, redirect: "manual" });
    // The body is not needed; cancel it so the connection is freed.
    await res.body?.cancel();
    return {
      outcome: classifyStatus(res.status, channel),
      status: res.status,
      retryAfterSeconds: parseRetryAfter(res.headers.get("Retry-After"), Date.now()),
    };
  } catch (err) {
    console.error(`${channel} request failed`, err);
    return { outcome: "retry" };
  }
}
