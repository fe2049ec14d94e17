import { describe, expect, it } from "vitest";
import { type ConversationRow, type ParticipantRow, toSharedConversation } from "./conversations";
import {
  catchUpPlan,
  decide,
  feedSpacingMs,
  type InboxChange,
  inboxTicket,
  MAX_INBOX_CALLS_PER_SECOND,
  parseInboxTicket,
} from "./inbox";

const row = (rev: number): ConversationRow => ({
  id: "c1",
  title: null,
  direct: false,
  createdBy: "alice",
  createdAt: 1,
  updatedAt: 1,
  lastSeq: 0,
  lastMessageSenderId: null,
  lastMessagePreview: null,
  lastMessageAt: null,
  rev,
});
const member = (userId: string): ParticipantRow => ({
  conversationId: "c1",
  userId,
  role: "member",
  joinedAt: 1,
  lastReadSeq: 0,
  lastDeliveredSeq: 0,
});
const state = (rev: number, members: string[]): InboxChange => ({
  kind: "conversation",
  conversation: toSharedConversation(row(rev), members.map(member)),
});
const removed = (rev: number): InboxChange => ({ kind: "removed", conversationId: "c1", rev });

describe("decide", () => {
  it("stores a newer state of a conversation the user belongs to, and ignores older or equal ones", () => {
    expect(decide(null, state(1, ["bob"]), "bob")).toBe("store");
    expect(decide({ rev: 1, removed: false }, state(2, ["bob"]), "bob")).toBe("store");
    expect(decide({ rev: 2, removed: false }, state(2, ["bob"]), "bob")).toBe("ignore");
    expect(decide({ rev: 3, removed: false }, state(2, ["bob"]), "bob")).toBe("ignore");
  });

  it("never stores a conversation that does not list the user", () => {
    expect(decide(null, state(1, ["alice"]), "bob")).toBe("remember");
    expect(decide({ rev: 1, removed: false }, state(2, ["alice"]), "bob")).toBe("remove");
  });

  it("removes a shown conversation once, and a late state from before the removal does not bring it back", () => {
    expect(decide({ rev: 1, removed: false }, removed(2), "bob")).toBe("remove");
    expect(decide({ rev: 2, removed: true }, removed(2), "bob")).toBe("ignore");
    expect(decide({ rev: 2, removed: true }, state(1, ["bob"]), "bob")).toBe("ignore");
    // Never shown: remembered, so that an older state from elsewhere (the directory's seed) is refused.
    expect(decide(null, removed(2), "bob")).toBe("remember");
    expect(decide({ rev: 2, removed: true }, state(1, ["bob"]), "bob")).toBe("ignore");
  });

  it("shows the conversation again when the user is added back (a newer state lists them)", () => {
    expect(decide({ rev: 2, removed: true }, state(3, ["bob"]), "bob")).toBe("store");
  });
});

describe("catchUpPlan", () => {
  it("replays from a version the inbox still covers, and asks for a resync otherwise", () => {
    expect(catchUpPlan(0, 0, 0)).toBe("replay");
    expect(catchUpPlan(5, 3, 9)).toBe("replay");
    expect(catchUpPlan(9, 3, 9)).toBe("replay");
    expect(catchUpPlan(2, 3, 9)).toBe("resync");
    expect(catchUpPlan(10, 3, 9)).toBe("resync");
  });
});

describe("inbox tickets", () => {
  it("name their user and carry the secret, and anything else is no ticket", () => {
    const ticket = inboxTicket("bob.smith@example.com", "s3cr3t_-");
    expect(parseInboxTicket(ticket)).toEqual({ userId: "bob.smith@example.com", secret: "s3cr3t_-" });
    // Not a user id once decoded: "a b" and "x|y" (space and bar are not allowed), and 129 characters.
    const named = (id: string) => inboxTicket(id, "s");
    for (const bad of [
      "",
      ".",
      "abc",
      "a.b.c",
      "a b.c",
      `${"a".repeat(201)}.x`,
      "YWxpY2U.",
      "!!.x",
      named("a b"),
      named("x|y"),
      named("u".repeat(129)),
    ]) {
      expect(parseInboxTicket(bad)).toBeNull();
    }
  });
});

describe("feedSpacingMs", () => {
  it("is the coalescing delay for a small room and keeps a big one under the calls per second", () => {
    expect(feedSpacingMs(2, 250)).toBe(250);
    expect(feedSpacingMs(50, 250)).toBe(250);
    expect(feedSpacingMs(100, 250)).toBe(500);
    for (const recipients of [1, 10, 51, 99, 100, 150]) {
      expect((recipients * 1000) / feedSpacingMs(recipients, 250)).toBeLessThanOrEqual(MAX_INBOX_CALLS_PER_SECOND);
    }
  });
});
