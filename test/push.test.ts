import { createExecutionContext, createMessageBatch, getQueueResult, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import worker from "../src/index";
import type { Notification } from "../src/push/notification";
import type { PushTask } from "../src/push/tasks";
import type { ConversationRoom } from "../src/room/room";
import { withBindings } from "./d1-recorder";
import { call, createConversation, eventually, expectError, projected, uniqueUser } from "./helpers";
import {
  decryptPush,
  expectedWebhookSignature,
  type FakeBrowser,
  fakeBrowser,
  fromBase64Url,
  toBase64Url,
  verifyVapid,
} from "./push-crypto";
import { Outbound, type Sent } from "./push-outbound";
import { connect } from "./socket";

const WEBHOOK = env.PUSH_WEBHOOK_URL as string;

let outbound: Outbound;
beforeEach(() => {
  outbound = new Outbound().install();
});
afterEach(() => outbound.restore());

let endpoints = 0;
/** A browser of `userId` with a fresh subscription, stored through the API. */
async function subscribedBrowser(userId: string): Promise<FakeBrowser> {
  const browser = await fakeBrowser(`https://fcm.push.test/send/${userId}-${endpoints++}`);
  const res = await call("/v1/push/subscriptions", {
    method: "PUT",
    as: userId,
    body: { endpoint: browser.endpoint, expirationTime: null, keys: browser.keys },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return browser;
}

async function storedSubscription(endpoint: string) {
  return env.DB.prepare("SELECT user_id AS userId, p256dh, auth FROM push_subscriptions WHERE endpoint = ?")
    .bind(endpoint)
    .first<{ userId: string; p256dh: string; auth: string }>();
}

const send = (conversationId: string, as: string, content: string) =>
  call(`/v1/conversations/${conversationId}/messages`, { method: "POST", as, body: { content } }).then((res) => {
    expect(res.status).toBe(201);
  });

/** A queue that records what is sent to it instead of delivering it. */
function recordingQueue() {
  const sent: { body: PushTask; delaySeconds: number | undefined }[] = [];
  const queue = {
    sent,
    async send(body: PushTask, options?: QueueSendOptions) {
      sent.push({ body, delaySeconds: options?.delaySeconds });
    },
    async sendBatch(messages: Iterable<MessageSendRequest<PushTask>>) {
      for (const m of messages) sent.push({ body: m.body, delaySeconds: m.delaySeconds });
    },
  };
  return queue;
}

/**
 * Makes the conversation's room schedule its push checks into a recording queue instead of the real one,
 * so that a test runs the consumer itself, when it chooses. Returns the recorded checks.
 */
async function captureChecks(conversationId: string) {
  const queue = recordingQueue();
  await runInDurableObject(env.ROOMS.getByName(conversationId), (instance: ConversationRoom) => {
    Reflect.set(instance, "env", withBindings(env, { PUSH_QUEUE: queue as unknown as Queue<PushTask> }));
  });
  return queue.sent;
}

let messageIds = 0;
/** Runs the push consumer on these tasks, as one batch; retries it schedules go to the returned queue. */
async function runConsumer(tasks: PushTask[], options: { attempts?: number; vars?: Partial<Cloudflare.Env> } = {}) {
  const queue = recordingQueue();
  const batch = createMessageBatch<PushTask>(
    "edge-chat-push",
    tasks.map((body) => ({ id: `msg-${messageIds++}`, timestamp: new Date(), attempts: options.attempts ?? 1, body })),
  );
  // getQueueResult() does not report a retry's delay: record it on the way.
  const retryDelays: (number | undefined)[] = [];
  for (const message of batch.messages) {
    const retry = message.retry.bind(message);
    message.retry = (retryOptions?: QueueRetryOptions) => {
      retryDelays.push(retryOptions?.delaySeconds);
      retry(retryOptions);
    };
  }
  const ctx = createExecutionContext();
  const bindings = withBindings(env, { PUSH_QUEUE: queue as unknown as Queue<PushTask>, ...options.vars });
  await worker.queue(batch as MessageBatch<unknown>, bindings);
  return { result: await getQueueResult(batch, ctx), scheduled: queue.sent, retryDelays };
}

const checksOf = (recorded: { body: PushTask }[]) => recorded.map((r) => r.body);

async function decrypted(browser: FakeBrowser, sent: Sent): Promise<Notification> {
  return JSON.parse(await decryptPush(browser, sent.body)) as Notification;
}

function webhookCallsFor(userId: string) {
  return outbound.to(WEBHOOK).filter((s) => (JSON.parse(s.text) as { userId: string }).userId === userId);
}

describe("PUT and DELETE /v1/push/subscriptions", () => {
  it("stores a browser's subscription for the caller, and the same endpoint again replaces its keys", async () => {
    const bob = uniqueUser("bob");
    const browser = await subscribedBrowser(bob);
    expect(await storedSubscription(browser.endpoint)).toEqual({ userId: bob, ...browser.keys });

    const renewed = await fakeBrowser(browser.endpoint);
    const res = await call("/v1/push/subscriptions", {
      method: "PUT",
      as: bob,
      body: { endpoint: browser.endpoint, keys: renewed.keys },
    });
    expect(res.status).toBe(201);
    expect(await storedSubscription(browser.endpoint)).toEqual({ userId: bob, ...renewed.keys });
  });

  it("moves an endpoint to whoever stores it last: a browser's subscription belongs to its signed-in user", async () => {
    const [bob, carol] = [uniqueUser("bob"), uniqueUser("carol")];
    const browser = await subscribedBrowser(bob);
    const res = await call("/v1/push/subscriptions", {
      method: "PUT",
      as: carol,
      body: { endpoint: browser.endpoint, keys: browser.keys },
    });
    expect(res.status).toBe(201);
    expect((await storedSubscription(browser.endpoint))?.userId).toBe(carol);
  });

  it("deletes only the caller's own subscription; anyone else's endpoint is a 204 that changes nothing", async () => {
    const [bob, mallory] = [uniqueUser("bob"), uniqueUser("mallory")];
    const browser = await subscribedBrowser(bob);
    const del = (as: string) =>
      call("/v1/push/subscriptions", { method: "DELETE", as, body: { endpoint: browser.endpoint } });

    expect((await del(mallory)).status).toBe(204);
    expect(await storedSubscription(browser.endpoint)).not.toBeNull();
    expect((await del(bob)).status).toBe(204);
    expect(await storedSubscription(browser.endpoint)).toBeNull();
    expect((await del(bob)).status).toBe(204);
  });

  it("keeps a user's newest 20 subscriptions", async () => {
    const bob = uniqueUser("bob");
    const browsers: FakeBrowser[] = [];
    for (let i = 0; i < 21; i++) browsers.push(await subscribedBrowser(bob));
    const { results } = await env.DB.prepare("SELECT endpoint FROM push_subscriptions WHERE user_id = ?")
      .bind(bob)
      .all<{ endpoint: string }>();
    expect(results.map((r) => r.endpoint).sort()).toEqual(
      browsers
        .slice(1)
        .map((b) => b.endpoint)
        .sort(),
    );
  });

  it("is documented in /openapi.json", async () => {
    const doc = (await (await call("/openapi.json")).json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths["/v1/push/subscriptions"] ?? {}).sort()).toEqual(["delete", "put"]);
  });

  it("takes only endpoints of known push services: any other https host is 400, and nothing is sent there", async () => {
    const bob = uniqueUser("bob");
    const good = await fakeBrowser("https://fcm.push.test/send/allowed");
    for (const endpoint of [
      "https://attacker.example/collect",
      "https://push.test.attacker.example/x",
      "https://notpush.test/x",
      "https://127.0.0.1/x",
    ]) {
      const res = await call("/v1/push/subscriptions", { method: "PUT", as: bob, body: { endpoint, keys: good.keys } });
      const error = await expectError(res, 400, "validation_failed");
      expect(error.error.details, endpoint).toEqual([
        { path: "endpoint", message: expect.stringContaining("push service") },
      ]);
    }
    const { results } = await env.DB.prepare("SELECT 1 FROM push_subscriptions WHERE user_id = ?").bind(bob).all();
    expect(results).toEqual([]);

    // One stored before the allow-list existed gets nothing either.
    const alice = uniqueUser("alice");
    const legacy = await fakeBrowser("https://attacker.example/legacy");
    await env.DB.prepare(
      "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth, created_at) VALUES (?, ?, ?, ?, ?)",
    )
      .bind(legacy.endpoint, bob, legacy.keys.p256dh, legacy.keys.auth, Date.now())
      .run();
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "hello");
    await runConsumer(checksOf(checks));
    expect(outbound.to(legacy.endpoint)).toEqual([]);
  });

  it("refuses bad input with 400 validation_failed and the failing paths, and stores nothing", async () => {
    const bob = uniqueUser("bob");
    const good = await fakeBrowser("https://fcm.push.test/send/never-stored");
    const notOnCurve = toBase64Url(new Uint8Array([4, ...new Uint8Array(64).fill(1)]));
    const cases: [unknown, string][] = [
      [{ endpoint: "http://fcm.push.test/send/x", keys: good.keys }, "endpoint"],
      [{ endpoint: "not a url", keys: good.keys }, "endpoint"],
      [{ endpoint: `https://fcm.push.test/${"x".repeat(2100)}`, keys: good.keys }, "endpoint"],
      [{ endpoint: good.endpoint, keys: { ...good.keys, p256dh: good.keys.p256dh.slice(0, 40) } }, "keys.p256dh"],
      [{ endpoint: good.endpoint, keys: { ...good.keys, p256dh: notOnCurve } }, "keys.p256dh"],
      [{ endpoint: good.endpoint, keys: { ...good.keys, p256dh: "!!!" } }, "keys.p256dh"],
      [{ endpoint: good.endpoint, keys: { ...good.keys, auth: toBase64Url(new Uint8Array(12)) } }, "keys.auth"],
      [{ endpoint: good.endpoint }, "keys"],
      [{ endpoint: good.endpoint, keys: good.keys, extra: 1 }, "extra"],
      [{ endpoint: good.endpoint, keys: { ...good.keys, extra: 1 } }, "keys.extra"],
    ];
    for (const [body, path] of cases) {
      const res = await call("/v1/push/subscriptions", { method: "PUT", as: bob, body });
      const error = await expectError(res, 400, "validation_failed");
      expect(
        error.error.details.map((d: { path: string }) => d.path),
        JSON.stringify(body),
      ).toContain(path);
    }
    const raw = await call("/v1/push/subscriptions", {
      method: "PUT",
      as: bob,
      rawBody: "{not json",
      headers: { "Content-Type": "application/json" },
    });
    await expectError(raw, 400, "validation_failed");
    const del = await call("/v1/push/subscriptions", { method: "DELETE", as: bob, body: { endpoint: "ftp://x" } });
    await expectError(del, 400, "validation_failed");
    const anonymous = await call("/v1/push/subscriptions", {
      method: "PUT",
      body: { endpoint: good.endpoint, keys: good.keys },
    });
    await expectError(anonymous, 401, "unauthenticated");
    const { results } = await env.DB.prepare("SELECT 1 FROM push_subscriptions WHERE user_id = ?").bind(bob).all();
    expect(results).toEqual([]);
  });
});

describe("push notifications to participants who are away", () => {
  it("sends a message's Web Push and signed webhook to the user who is away, verifiable and decryptable", async () => {
    // Through the real queue, as in production: the room schedules, the consumer sends.
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    const conv = await createConversation(alice, [bob], { title: "Lunch" });
    await send(conv.id, alice, "Noon at the usual place?");

    await eventually(() => outbound.to(browser.endpoint).length > 0, 15_000, "the web push");
    await eventually(() => webhookCallsFor(bob).length > 0, 15_000, "the webhook");
    const [push] = outbound.to(browser.endpoint) as [Sent];
    const [hook] = webhookCallsFor(bob) as [Sent];

    // Web Push: RFC 8291 encryption for this subscription, RFC 8292 VAPID.
    expect(push.method).toBe("POST");
    expect(push.headers.get("Content-Encoding")).toBe("aes128gcm");
    expect(Number(push.headers.get("TTL"))).toBeGreaterThan(0);
    expect(push.headers.get("Topic")).toBe(conv.id);
    const { payload, protectedHeader } = await verifyVapid(
      push.headers.get("Authorization") ?? "",
      env.VAPID_PUBLIC_KEY as string,
      browser.endpoint,
    );
    expect(protectedHeader.alg).toBe("ES256");
    expect(payload.sub).toBe(env.VAPID_SUBJECT);
    expect(payload.exp).toBeLessThanOrEqual(Date.now() / 1000 + 24 * 3600);
    const notification = await decrypted(browser, push);
    expect(notification).toMatchObject({
      type: "messages",
      conversationId: conv.id,
      title: "Lunch",
      body: `${alice}: Noon at the usual place?`,
      unreadCount: 1,
      lastSeq: 1,
      senderId: alice,
    });
    // Nobody else's keys open it.
    await expect(decryptPush(await fakeBrowser(browser.endpoint), push.body)).rejects.toThrow();

    // Webhook: HMAC-SHA256 over timestamp and body.
    const timestamp = hook.headers.get("X-Push-Timestamp") ?? "";
    expect(Math.abs(Number(timestamp) - Date.now() / 1000)).toBeLessThan(60);
    expect(hook.headers.get("X-Push-Signature")).toBe(
      await expectedWebhookSignature(env.PUSH_WEBHOOK_SECRET as string, timestamp, hook.text),
    );
    expect(hook.headers.get("X-Push-Signature")).not.toBe(
      await expectedWebhookSignature("another-secret", timestamp, hook.text),
    );
    expect(JSON.parse(hook.text)).toMatchObject({ ...notification, userId: bob, id: hook.headers.get("X-Push-Id") });
    // The sender is not notified of their own message.
    expect(webhookCallsFor(alice)).toEqual([]);
  });

  it("schedules no check when everyone else is connected, and notifies only the one who is not", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const bobBrowser = await subscribedBrowser(bob);
    const carolBrowser = await subscribedBrowser(carol);
    const pair = await createConversation(alice, [bob]);
    const group = await createConversation(alice, [bob, carol]);
    const pairChecks = await captureChecks(pair.id);
    const groupChecks = await captureChecks(group.id);
    const socket = await connect(pair.id, bob);
    const groupSocket = await connect(group.id, bob);

    await send(pair.id, alice, "are you there?");
    await socket.next("message");
    expect(pairChecks).toEqual([]);

    await send(group.id, alice, "hello both");
    await groupSocket.next("message");
    expect(checksOf(groupChecks)).toEqual([{ kind: "check", conversationId: group.id, seq: 1 }]);
    expect(groupChecks[0]?.delaySeconds).toBe(0);
    await runConsumer(checksOf(groupChecks));
    expect(outbound.to(carolBrowser.endpoint)).toHaveLength(1);
    expect(webhookCallsFor(carol)).toHaveLength(1);
    expect(outbound.to(bobBrowser.endpoint)).toEqual([]);
    expect(webhookCallsFor(bob)).toEqual([]);
    socket.close();
    groupSocket.close();
  });

  it("checks the sockets again when the check runs: a user who connected meanwhile gets nothing", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "ping");
    expect(checks).toHaveLength(1);

    const socket = await connect(conv.id, bob);
    await runConsumer(checksOf(checks));
    expect(outbound.to(browser.endpoint)).toEqual([]);
    expect(webhookCallsFor(bob)).toEqual([]);
    socket.close();
    await socket.waitClosed();

    // Away again, still not read: the next check notifies.
    await eventually(async () => (await env.ROOMS.getByName(conv.id).onlineUserIds()).length === 0);
    await runConsumer(checksOf(checks));
    expect(outbound.to(browser.endpoint)).toHaveLength(1);
  });

  it("sends nothing to a user who read the message before the check ran", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const browser = await subscribedBrowser(bob);
    const conv = await createConversation(alice, [bob, carol]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "did you see this?");
    const read = await call(`/v1/conversations/${conv.id}/read`, { method: "POST", as: bob, body: { seq: 1 } });
    expect(read.status).toBe(200);

    await runConsumer(checksOf(checks));
    expect(outbound.to(browser.endpoint)).toEqual([]);
    expect(webhookCallsFor(bob)).toEqual([]);
    // Carol has not read it: she is still told (by webhook; she has no subscription).
    expect(webhookCallsFor(carol)).toHaveLength(1);
  });

  it("collapses several messages of a conversation into one notification", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    const conv = await createConversation(alice, [bob], { title: "Plans" });
    const checks = await captureChecks(conv.id);
    for (const text of ["one", "two", "three"]) await send(conv.id, alice, text);
    expect(checksOf(checks).map((c) => c.kind === "check" && c.seq)).toEqual([1, 2, 3]);

    const { result } = await runConsumer(checksOf(checks));
    expect(result.retryMessages).toEqual([]);
    const pushes = outbound.to(browser.endpoint);
    expect(pushes).toHaveLength(1);
    expect(await decrypted(browser, pushes[0] as Sent)).toMatchObject({
      title: "Plans",
      body: `3 new messages · ${alice}: three`,
      unreadCount: 3,
      lastSeq: 3,
    });
    expect(webhookCallsFor(bob)).toHaveLength(1);
  });

  it("leaves an early check to the newer message's own check while that one is not due", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "first");
    await send(conv.id, alice, "second");
    const [first, second] = checksOf(checks) as [PushTask, PushTask];

    // With a 10 s delay, the check of seq 1 runs in another batch than seq 2's, before seq 2's is due.
    const vars = { PUSH_DELAY_SECONDS: "10" };
    await runConsumer([first], { vars });
    expect(outbound.to(browser.endpoint)).toEqual([]);
    await runConsumer([second], { vars });
    const pushes = outbound.to(browser.endpoint);
    expect(pushes).toHaveLength(1);
    expect(await decrypted(browser, pushes[0] as Sent)).toMatchObject({ unreadCount: 2, lastSeq: 2 });
  });

  it("deletes a subscription whose push service answers 410 or 404, and keeps the user's others", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const gone = await subscribedBrowser(bob);
    const unknown = await subscribedBrowser(bob);
    const alive = await subscribedBrowser(bob);
    outbound.answer(gone.endpoint, 410);
    outbound.answer(unknown.endpoint, 404);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "still there?");

    const { result, scheduled } = await runConsumer(checksOf(checks));
    expect(result.retryMessages).toEqual([]);
    expect(scheduled).toEqual([]);
    expect(outbound.to(gone.endpoint)).toHaveLength(1);
    expect(outbound.to(unknown.endpoint)).toHaveLength(1);
    expect(await storedSubscription(gone.endpoint)).toBeNull();
    expect(await storedSubscription(unknown.endpoint)).toBeNull();
    expect(await storedSubscription(alive.endpoint)).not.toBeNull();
    expect(outbound.to(alive.endpoint)).toHaveLength(1);
  });

  it("retries a failed delivery on its own, with backoff, until it goes through or gives up", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    outbound.answer(browser.endpoint, 503, 500, 201);
    outbound.answer(WEBHOOK, 201);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "retry me");

    // First attempt in the check: 503. Only that delivery comes back, 10 s later; the webhook went through.
    const first = await runConsumer(checksOf(checks));
    expect(first.result.retryMessages).toEqual([]);
    expect(first.scheduled).toEqual([
      {
        body: expect.objectContaining({
          kind: "deliver",
          userId: bob,
          attempt: 2,
          channel: { type: "webpush", endpoint: browser.endpoint },
        }),
        delaySeconds: 10,
      },
    ]);
    expect(webhookCallsFor(bob)).toHaveLength(1);
    const retry = first.scheduled[0]?.body as PushTask;

    // Second attempt: 500, so the queue redelivers it 20 s later; the third goes through.
    const second = await runConsumer([retry]);
    expect(second.result.retryMessages).toHaveLength(1);
    expect(second.retryDelays).toEqual([20]);
    const third = await runConsumer([retry], { attempts: 2 });
    expect(third.result.retryMessages).toEqual([]);
    expect(third.result.explicitAcks).toHaveLength(1);
    const pushes = outbound.to(browser.endpoint);
    expect(pushes).toHaveLength(3);
    expect(await decrypted(browser, pushes[2] as Sent)).toMatchObject({ preview: "retry me" });
    expect(webhookCallsFor(bob)).toHaveLength(1);

    // A delivery that keeps failing is dropped after the last attempt.
    outbound.answer(browser.endpoint, 503);
    const last = await runConsumer([retry], { attempts: 4 });
    expect(last.result.retryMessages).toEqual([]);
    expect(last.result.explicitAcks).toHaveLength(1);
  });

  it("builds a retried delivery again from the conversation as it is: a message deleted since is not shown", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const browser = await subscribedBrowser(bob);
    outbound.answer(browser.endpoint, 503, 201);
    outbound.answer(WEBHOOK, 201);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "the secret plan");
    const first = await runConsumer(checksOf(checks));
    const retry = first.scheduled.find((s) => s.body.kind === "deliver")?.body as PushTask;
    expect(retry).toMatchObject({ channel: { type: "webpush" } });

    const deleted = await call(`/v1/conversations/${conv.id}/messages/1`, { method: "DELETE", as: alice });
    expect(deleted.status).toBe(200);
    await runConsumer([retry]);
    const pushes = outbound.to(browser.endpoint);
    expect(pushes).toHaveLength(2);
    const sent = await decrypted(browser, pushes[1] as Sent);
    expect(sent).toMatchObject({ preview: "", lastSeq: 1, unreadCount: 1 });
    expect(JSON.stringify(sent)).not.toContain("secret plan");
  });

  it("keeps one invocation within its subrequest budget however many are away: the rest go out later", async () => {
    const alice = uniqueUser("alice");
    const away = Array.from({ length: 30 }, (_, i) => uniqueUser(`away${i}`));
    const browsers = await Promise.all(away.map((u) => subscribedBrowser(u)));
    const conv = await createConversation(alice, away);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "to everyone");
    const budget = 20;
    const vars = { PUSH_SUBREQUEST_BUDGET: String(budget), PUSH_WEBHOOK_URL: "" };

    const first = await runConsumer(checksOf(checks), { vars });
    const inline = outbound.sent.length;
    // The room's answer and the subscriptions' read from D1 are subrequests too.
    expect(inline).toBeLessThanOrEqual(budget - 2);
    expect(inline).toBeGreaterThan(0);
    const later = first.scheduled.map((s) => s.body);
    expect(later).toHaveLength(30 - inline);
    expect(later.every((t) => t.kind === "deliver")).toBe(true);
    // The deferred deliveries, a batch at a time, each within the budget too; everyone gets exactly one push.
    for (let i = 0; i < later.length; i += 4) {
      const before = outbound.sent.length;
      await runConsumer(later.slice(i, i + 4), { vars });
      expect(outbound.sent.length - before).toBeLessThanOrEqual(budget);
    }
    for (const browser of browsers) expect(outbound.to(browser.endpoint)).toHaveLength(1);
  });

  it("drops a retry once the user has read the message", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    outbound.answer(WEBHOOK, 503);
    const conv = await createConversation(alice, [bob]);
    const checks = await captureChecks(conv.id);
    await send(conv.id, alice, "later");
    const { scheduled } = await runConsumer(checksOf(checks));
    const retry = scheduled.find((s) => s.body.kind === "deliver" && s.body.userId === bob)?.body as PushTask;
    expect(retry).toMatchObject({ channel: { type: "webhook" } });

    const read = await call(`/v1/conversations/${conv.id}/read`, { method: "POST", as: bob, body: { seq: 1 } });
    expect(read.status).toBe(200);
    // The retry reads the marker from the directory, which the room's pump updates within a second; a real
    // retry comes 10 s or more after the first attempt, so by then it has.
    await projected(conv.id);
    const before = outbound.to(WEBHOOK).length;
    const { result } = await runConsumer([retry]);
    expect(result.explicitAcks).toHaveLength(1);
    expect(outbound.to(WEBHOOK)).toHaveLength(before);
  });

  it("never lets push fail or delay a send: a queue that throws changes nothing for the sender", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const conv = await createConversation(alice, [bob]);
    await runInDurableObject(env.ROOMS.getByName(conv.id), (instance: ConversationRoom) => {
      const broken = {
        send: () => Promise.reject(new Error("queue unavailable")),
        sendBatch: () => Promise.reject(new Error("queue unavailable")),
      };
      Reflect.set(instance, "env", withBindings(env, { PUSH_QUEUE: broken as unknown as Queue<PushTask> }));
    });
    const socket = await connect(conv.id, alice);
    socket.send({ type: "send", localId: "a-1", content: "over the socket" });
    await socket.next("ack");
    await send(conv.id, alice, "over REST");
    const page = await call(`/v1/conversations/${conv.id}/messages`, { as: bob });
    expect(((await page.json()) as { messages: unknown[] }).messages).toHaveLength(2);
    socket.close();
  });
});

describe("the VAPID public key of the tests", () => {
  it("is an uncompressed P-256 point, as browsers take it for applicationServerKey", () => {
    const key = fromBase64Url(env.VAPID_PUBLIC_KEY as string);
    expect(key).toHaveLength(65);
    expect(key[0]).toBe(4);
  });
});
