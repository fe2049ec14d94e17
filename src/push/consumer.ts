import type { Db } from "../db/conversations";
import { directory } from "../db/directory";
import type { Env } from "../env";
import { roomOf } from "../routes/room-client";
import { type PushConfig, readPushConfig } from "./config";
import type { Delivery } from "./http";
import {
  buildNotification,
  collapseChecks,
  defersToNewer,
  MAX_DELIVERY_ATTEMPTS,
  retryDelaySeconds,
} from "./notification";
import { deleteGoneSubscription, findSubscription, findSubscriptions, type SubscriptionRow } from "./store";
import type { PushTask } from "./tasks";
import { sendWebhook } from "./webhook";
import { sendWebPush } from "./webpush";

type CheckTask = Extract<PushTask, { kind: "check" }>;
type DeliverTask = Extract<PushTask, { kind: "deliver" }>;

/**
 * The push queue's consumer. Checks of one conversation in a batch are collapsed into one (its highest seq);
 * each check reads who still has not read and has no socket, and sends each of them one notification per
 * channel. A delivery that failed in a way worth retrying comes back as its own `deliver` task, with backoff.
 */
export async function handlePushBatch(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const config = readPushConfig(env);
  const db = directory(env);
  const checks: Message<CheckTask>[] = [];
  const deliveries: Message<DeliverTask>[] = [];
  for (const message of batch.messages) {
    const task = message.body as PushTask | null;
    if (task?.kind === "check") checks.push(message as Message<CheckTask>);
    else if (task?.kind === "deliver") deliveries.push(message as Message<DeliverTask>);
    else {
      console.error("push queue: unknown task dropped", message.id);
      message.ack();
    }
  }

  const highest = collapseChecks(checks.map((m) => m.body));
  const byConversation = Map.groupBy(checks, (m) => m.body.conversationId);
  await Promise.all([
    ...[...byConversation].map(async ([conversationId, messages]) => {
      try {
        await checkConversation(env, db, config, conversationId, highest.get(conversationId) ?? 0);
        for (const m of messages) m.ack();
      } catch (err) {
        // Reading D1 or asking the room failed, before anything was sent: the whole check can run again.
        console.error("push check failed", err);
        for (const m of messages) m.retry({ delaySeconds: retryDelaySeconds(m.attempts + 1) });
      }
    }),
    ...deliveries.map((m) => retryDelivery(env, db, config, m)),
  ]);
}

async function checkConversation(
  env: Env,
  db: Db,
  config: PushConfig,
  conversationId: string,
  seq: number,
): Promise<void> {
  if (!config.vapid && !config.webhook) return;
  // The room keeps the markers and the sockets: it answers who has not read and who is connected.
  const read = await roomOf(env, conversationId).pushCheck({ seq });
  if (!read || read.unread.length === 0) return;
  if (defersToNewer(read.conversation, seq, Date.now(), config.delaySeconds)) return;
  const online = new Set(read.online);
  const away = read.unread.filter((u) => !online.has(u.userId));
  if (away.length === 0) return;

  const awayIds = away.map((u) => u.userId);
  const subscriptions = config.vapid ? await findSubscriptions(db, awayIds) : [];
  const byUser = Map.groupBy(subscriptions, (s) => s.userId);
  const retries: MessageSendRequest<DeliverTask>[] = [];
  const attempt = async (task: DeliverTask, subscription: SubscriptionRow | null) => {
    // Each delivery fails alone: the check must not run again for the others, which went out.
    const delivery = await deliver(db, config, task, subscription).catch((err): Delivery => {
      console.error("push delivery failed", err);
      return { outcome: "retry" };
    });
    if (delivery.outcome === "retry") {
      retries.push({ body: { ...task, attempt: 2 }, delaySeconds: retryDelaySeconds(2, delivery.retryAfterSeconds) });
    }
  };
  await Promise.all(
    away.flatMap(({ userId, lastReadSeq }) => {
      const notification = buildNotification(read.conversation, lastReadSeq);
      const base = { kind: "deliver", conversationId, userId, notification, attempt: 1 } as const;
      return [
        ...(byUser.get(userId) ?? []).map((s) =>
          attempt({ ...base, channel: { type: "webpush", endpoint: s.endpoint } }, s),
        ),
        ...(config.webhook
          ? [attempt({ ...base, channel: { type: "webhook", deliveryId: newDeliveryId() } }, null)]
          : []),
      ];
    }),
  );
  await scheduleRetries(env, retries);
}

/** A delivery that failed before: sent again unless the user read meanwhile, left, or dropped the subscription. */
async function retryDelivery(env: Env, db: Db, config: PushConfig, message: Message<DeliverTask>): Promise<void> {
  const task = message.body;
  const attempt = task.attempt + message.attempts - 1;
  try {
    const endpoint = task.channel.type === "webpush" ? task.channel.endpoint : null;
    // The markers from the room, which keeps them; the subscription from D1.
    const [read, subscription] = await Promise.all([
      roomOf(env, task.conversationId).pushCheck({ seq: task.notification.lastSeq }),
      endpoint === null ? null : findSubscription(db, task.userId, endpoint),
    ]);
    const stillUnread = read?.unread.some((u) => u.userId === task.userId) ?? false;
    if (!stillUnread || (endpoint !== null && subscription === null)) return message.ack();
    const delivery = await deliver(db, config, task, subscription);
    if (delivery.outcome !== "retry") return message.ack();
    if (attempt >= MAX_DELIVERY_ATTEMPTS) {
      console.error(`push delivery dropped after ${attempt} attempts`, task.channel.type, delivery.status);
      return message.ack();
    }
    message.retry({ delaySeconds: retryDelaySeconds(attempt + 1, delivery.retryAfterSeconds) });
  } catch (err) {
    console.error("push delivery failed", err);
    message.retry({ delaySeconds: retryDelaySeconds(attempt + 1) });
  }
}

/** One attempt on one channel; a push service that says the subscription is gone gets it deleted. */
async function deliver(
  db: Db,
  config: PushConfig,
  task: DeliverTask,
  subscription: SubscriptionRow | null,
): Promise<Delivery> {
  const { channel, notification } = task;
  if (channel.type === "webhook") {
    if (!config.webhook) return { outcome: "failed" };
    const delivery = await sendWebhook(
      { ...notification, id: channel.deliveryId, userId: task.userId },
      config.webhook,
    );
    if (delivery.outcome === "failed") console.error("webhook refused", delivery.status);
    return delivery;
  }
  if (!config.vapid || !subscription) return { outcome: "failed" };
  const delivery = await sendWebPush(subscription, notification, config.vapid);
  if (delivery.outcome === "gone") await deleteGoneSubscription(db, subscription.endpoint, subscription.p256dh);
  else if (delivery.outcome === "failed") console.error("web push refused", delivery.status);
  return delivery;
}

/** Queues the retries of failed deliveries, each after its backoff; losing them must not fail the check. */
async function scheduleRetries(env: Env, retries: MessageSendRequest<DeliverTask>[]): Promise<void> {
  if (!env.PUSH_QUEUE || retries.length === 0) return;
  try {
    // A batch holds at most 100 messages.
    for (let i = 0; i < retries.length; i += 100) await env.PUSH_QUEUE.sendBatch(retries.slice(i, i + 100));
  } catch (err) {
    console.error("push retries not scheduled", err);
  }
}

const newDeliveryId = () => crypto.randomUUID();
