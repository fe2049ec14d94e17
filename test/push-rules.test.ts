import { describe, expect, it } from "vitest";
import { DEFAULT_PUSH_SERVICE_HOSTS, isPushService, readPushConfig } from "../src/push/config";
import { base64UrlBytes } from "../src/push/keys";
import {
  buildNotification,
  classifyStatus,
  collapseChecks,
  defersToNewer,
  inlineDeliveries,
  type PushConversation,
  parseRetryAfter,
  retryDelaySeconds,
} from "../src/push/notification";

const conversation = (over: Partial<PushConversation> = {}): PushConversation => ({
  id: "c1",
  title: null,
  lastSeq: 5,
  lastMessageSenderId: "alice",
  lastMessagePreview: "see you",
  lastMessageAt: Date.parse("2026-11-25T12:00:00.000Z"),
  ...over,
});

describe("the push services' allow-list", () => {
  it("takes the big browsers' push services by default, on a label boundary only", () => {
    const config = readPushConfig({});
    for (const endpoint of [
      "https://fcm.googleapis.com/fcm/send/abc",
      "https://updates.push.services.mozilla.com/wpush/v2/abc",
      "https://web.push.apple.com/QGmN",
      "https://wns2-par02p.notify.windows.com/w/?token=abc",
    ]) {
      expect(isPushService(config, endpoint), endpoint).toBe(true);
    }
    for (const endpoint of [
      "https://fcm.googleapis.com.attacker.example/x",
      "https://evilfcm.googleapis.com/x",
      "http://fcm.googleapis.com/fcm/send/abc",
      "https://attacker.example/fcm.googleapis.com",
      "not a url",
    ]) {
      expect(isPushService(config, endpoint), endpoint).toBe(false);
    }
  });

  it("is replaced by PUSH_SERVICE_HOSTS when set", () => {
    const config = readPushConfig({ PUSH_SERVICE_HOSTS: " push.example , other.test " });
    expect(isPushService(config, "https://a.push.example/x")).toBe(true);
    expect(isPushService(config, "https://other.test/x")).toBe(true);
    expect(isPushService(config, "https://fcm.googleapis.com/fcm/send/abc")).toBe(false);
  });
});

describe("push rules", () => {
  it("sends as many deliveries now as the budget pays for, after the queue calls of the rest", () => {
    expect(inlineDeliveries(30, 18, 2)).toBe(8); // 1 queue call, then 17 / 2
    expect(inlineDeliveries(5, 500, 2)).toBe(5);
    expect(inlineDeliveries(2_000, 500, 2)).toBe(240); // 20 queue calls
    expect(inlineDeliveries(10, 0, 2)).toBe(0);
    expect(inlineDeliveries(0, 100, 2)).toBe(0);
  });

  it("collapses the checks of a batch to the highest seq of each conversation", () => {
    const checks = [
      { conversationId: "a", seq: 2 },
      { conversationId: "b", seq: 7 },
      { conversationId: "a", seq: 4 },
      { conversationId: "a", seq: 3 },
    ];
    expect([...collapseChecks(checks)]).toEqual([
      ["a", 4],
      ["b", 7],
    ]);
  });

  it("defers a check to a newer message's check only while that one is not due", () => {
    const at = conversation().lastMessageAt as number;
    expect(defersToNewer(conversation(), 3, at + 9_000, 10)).toBe(true);
    expect(defersToNewer(conversation(), 3, at + 10_000, 10)).toBe(false);
    expect(defersToNewer(conversation(), 5, at + 1_000, 10)).toBe(false);
    expect(defersToNewer(conversation(), 3, at, 0)).toBe(false);
  });

  it("says one message as it is and several as a count with the newest", () => {
    expect(buildNotification(conversation(), 4)).toMatchObject({
      title: "alice",
      body: "alice: see you",
      unreadCount: 1,
      sentAt: "2026-11-25T12:00:00.000Z",
    });
    expect(buildNotification(conversation({ title: "Team" }), 2)).toMatchObject({
      title: "Team",
      body: "3 new messages · alice: see you",
      unreadCount: 3,
    });
    expect(buildNotification(conversation({ lastMessagePreview: "" }), 4).body).toBe("a deleted message");
  });

  it("reads a push service's status: sent, gone, worth a retry, or failed", () => {
    expect([201, 202, 204].map((s) => classifyStatus(s, "webpush"))).toEqual(["sent", "sent", "sent"]);
    expect([404, 410].map((s) => classifyStatus(s, "webpush"))).toEqual(["gone", "gone"]);
    expect([404, 410].map((s) => classifyStatus(s, "webhook"))).toEqual(["failed", "failed"]);
    expect([408, 429, 500, 503].map((s) => classifyStatus(s, "webpush"))).toEqual(Array(4).fill("retry"));
    expect([400, 401, 403, 413].map((s) => classifyStatus(s, "webpush"))).toEqual(Array(4).fill("failed"));
  });

  it("backs off 10, 20, 40 s..., at most 15 minutes, unless Retry-After asks for longer", () => {
    expect([2, 3, 4, 5, 10, 20].map((n) => retryDelaySeconds(n))).toEqual([10, 20, 40, 80, 900, 900]);
    expect(retryDelaySeconds(2, 120)).toBe(120);
    expect(retryDelaySeconds(2, 5)).toBe(10);
    const now = Date.parse("2026-11-25T12:00:00.000Z");
    expect(parseRetryAfter("30", now)).toBe(30);
    expect(parseRetryAfter("Wed, 25 Nov 2026 12:01:00 GMT", now)).toBe(60);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });

  it("reads the settings: a 10 s default delay, and a channel only when it is complete", () => {
    expect(readPushConfig({})).toEqual({
      delaySeconds: 10,
      vapid: null,
      webhook: null,
      serviceHosts: DEFAULT_PUSH_SERVICE_HOSTS,
      subrequestBudget: 500,
    });
    expect(readPushConfig({ PUSH_SUBREQUEST_BUDGET: "50" }).subrequestBudget).toBe(50);
    expect(readPushConfig({ PUSH_SUBREQUEST_BUDGET: "0" }).subrequestBudget).toBe(500);
    expect(readPushConfig({ PUSH_DELAY_SECONDS: "0" }).delaySeconds).toBe(0);
    expect(readPushConfig({ PUSH_DELAY_SECONDS: "-1" }).delaySeconds).toBe(10);
    expect(readPushConfig({ PUSH_DELAY_SECONDS: "1e9" }).delaySeconds).toBe(43_200);
    expect(readPushConfig({ PUSH_WEBHOOK_URL: "https://x.test/hook" }).webhook).toBeNull();
    expect(readPushConfig({ VAPID_PUBLIC_KEY: "k", VAPID_PRIVATE_KEY: "d" }).vapid).toBeNull();
  });

  it("decodes base64url with or without padding and refuses anything else", () => {
    expect(base64UrlBytes("AQID")).toEqual(new Uint8Array([1, 2, 3]));
    expect(base64UrlBytes("AQ")).toEqual(new Uint8Array([1]));
    expect(base64UrlBytes("AQ==")).toEqual(new Uint8Array([1]));
    expect(base64UrlBytes("-_8")).toEqual(new Uint8Array([251, 255]));
    for (const bad of ["A", "a+b/", "AQ=A", "!!"]) expect(base64UrlBytes(bad), bad).toBeNull();
  });
});
