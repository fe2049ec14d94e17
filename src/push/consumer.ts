import type { Db } from "../db/conversations";
import { directory } from "../db/directory";
import type { Env } from "../env";
import { roomOf } from "../routes/room-client";
import { isPushService, type PushConfig, readPushConfig } from "./config";
import type { Delivery } from "./http";
import {
  buildNotification,
  collapseChecks,
  defersToNewer,
  inlineDeliveries,
  MAX_DELIVERY_ATTEMPTS,
  QUEUE_BATCH,
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
 * each check reads who still has not read and has no socket, and plans one notification per channel for each
 * of them. A delivery that failed in a way worth retrying comes back as its own `deliver` task, with backoff.
 *
 * One invocation stays within `subrequestBudget`: the checks' and the earlier deliveries' reads come first
 * (2 and 4 subrequests each); of the planned deliveries, as many go out now as the rest of the budget pays
 * for (2 each: the push, and the delete of a subscription found gone), and the others go back to the queue
 * as `deliver` tasks, sent by later invocations within their own budgets.
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
  const budget = { left: config.subrequestBudget - CHECK_COST * byConversation.size };
  // Earlier deliveries the budget cannot pay for go back to the queue as they are (one call for them all).
  const affordable = Math.max(0, Math.floor((budget.left - 1) / DELIVER_TASK_COST));
  const requeued = deliveries.slice(affordable);
  budget.left -= DELIVER_TASK_COST * Math.min(affordable, deliveries.length) + (requeued.length > 0 ? 1 : 0);

  const [planned] = await Promise.all([
    Promise.all(
      [...byConversation].map(async ([conversationId, messages]) => {
        try {
          const plan = await planConversation(env, db, config, conversationId, highest.get(conversationId) ?? 0);
          return { messages, plan };
        } catch (err) {
          // Reading D1 or asking the room failed, before anything was sent: the whole check can run again.
          console.error("push check failed", err);
          for (const m of messages) m.retry({ delaySeconds: retryDelaySeconds(m.attempts + 1) });
          return { messages: [], plan: [] };
        }
      }),
    ),
    ...deliveries.slice(0, affordable).map((m) => retryDelivery(env, db, config, m)),
  ]);

  const all = planned.flatMap((p) => p.plan);
  const now = inlineDeliveries(all.length, budget.left, SEND_COST);
  const retries: MessageSendRequest<DeliverTask>[] = [];
  await Promise.all(
    all.slice(0, now).map(async ({ task, subscription }) => {
      // Each delivery fails alone: the check must not run again for the others, which went out.
      const delivery = await deliver(db, config, task, subscription).catch((err): Delivery => {
        console.error("push delivery failed", err);
        return { outcome: "retry" };
      });
      if (delivery.outcome === "retry") {
        retries.push({ body: { ...task, attempt: 2 }, delaySeconds: retryDelaySeconds(2, delivery.retryAfterSeconds) });
      }
    }),
  );
  const later = all.slice(now).map(({ task }) => ({ body: task }));
  await enqueue(env, [...later, ...retries, ...requeued.map((m) => ({ body: m.body }))]);
  for (const m of [...planned.flatMap((p) => p.messages), ...requeued]) m.ack();
}

/** Subrequests of a check (the room's answer, D1's subscriptions) and of an earlier delivery (+ its push). */
const CHECK_COST = 2;
const DELIVER_TASK_COST = 4;
/** A push, and the delete of its subscription when the push service says it is gone. */
const SEND_COST = 2;

interface PlannedDelivery {
  task: DeliverTask;
  subscription: SubscriptionRow | null;
}

/** Who of a conversation gets what: one delivery per channel for each participant who is away and has not read. */
async function planConversation(
  env: Env,
  db: Db,
  config: PushConfig,
  conversationId: string,
  seq: number,
): Promise<PlannedDelivery[]> {
  if (!config.vapid && !config.webhook) return [];
  // The room keeps the markers and the sockets: it answers who has not read and who is connected.
  const read = await roomOf(env, conversationId).pushCheck({ seq });
  if (!read || read.unread.length === 0) return [];
  if (defersToNewer(read.conversation, seq, Date.now(), config.delaySeconds)) return [];
  const online = new Set(read.online);
  const away = read.unread.filter((u) => !online.has(u.userId));
  if (away.length === 0) return [];

  const subscriptions = config.vapid
    ? await findSubscriptions(
        db,
        away.map((u) => u.userId),
      )
    : [];
  const byUser = Map.groupBy(subscriptions, (s) => s.userId);
  return away.flatMap(({ userId, lastReadSeq }) => {
    const notification = buildNotification(read.conversation, lastReadSeq);
    const base = { kind: "deliver", conversationId, userId, notification, attempt: 1 } as const;
    return [
      ...(byUser.get(userId) ?? []).map((s) => ({
        task: { ...base, channel: { type: "webpush" as const, endpoint: s.endpoint } },
        subscription: s,
      })),
      ...(config.webhook
        ? [
            {
              task: { ...base, channel: { type: "webhook" as const, deliveryId: newDeliveryId() } },
              subscription: null,
            },
          ]
        : []),
    ];
  });
}

/**
 * A delivery that failed before, or that an earlier invocation had no budget for: sent unless the user read
 * meanwhile, left, or dropped the subscription, and built again from the conversation as it is now, so that
 * a message deleted (or edited) since is not shown as it was.
 */
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
    const unread = read?.unread.find((u) => u.userId === task.userId);
    if (!read || !unread || (endpoint !== null && subscription === null)) return message.ack();
    const current = { ...task, notification: buildNotification(read.conversation, unread.lastReadSeq) };
    const delivery = await deliver(db, config, current, subscription);
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
  // Stored before the allow-list, or since taken off it: not sent.
  if (!isPushService(config, subscription.endpoint)) return { outcome: "failed" };
  const delivery = await sendWebPush(subscription, notification, config.vapid);
  if (delivery.outcome === "gone") await deleteGoneSubscription(db, subscription.endpoint, subscription.p256dh);
  else if (delivery.outcome === "failed") console.error("web push refused", delivery.status);
  return delivery;
}

/** Queues deliveries for later (retries after their backoff); losing them must not fail the check. */
async function enqueue(env: Env, tasks: MessageSendRequest<DeliverTask>[]): Promise<void> {
  if (!env.PUSH_QUEUE || tasks.length === 0) return;
  try {
    for (let i = 0; i < tasks.length; i += QUEUE_BATCH) await env.PUSH_QUEUE.sendBatch(tasks.slice(i, i + QUEUE_BATCH));
  } catch (err) {
    console.error("push deliveries not queued", err);
  }
}

const newDeliveryId = () => crypto.randomUUID();
