import { describe, expect, expectTypeOf, it } from "vitest";
import type * as sdk from "../src/client/contract";
import { ERROR_STATUS, type ErrorCode } from "../src/errors";
import {
  type ClientFrame,
  type ConversationDto,
  type ConversationPage,
  type InboxFrame,
  InboxFrameSchema,
  type InboxTotals,
  type MessageDto,
  type MessagePage,
  type ParticipantDto,
  type ServerFrame,
  ServerFrameSchema,
  type Ticket,
} from "../src/schemas";

// The SDK's hand-written contract types (src/client/contract.ts) against the server's, derived from its zod
// schemas. The type assertions are checked by `tsc --noEmit` (npm run typecheck, which `npm test` runs
// first): change a field on either side and the build fails here. The runtime part checks the other way
// round: values typed by the SDK are accepted by the server's schemas.

type Out<T extends { _zod: { output: unknown } }> = T["_zod"]["output"];

describe("the SDK's contract types are the server's", () => {
  it("has the same resources, REST bodies and error codes", () => {
    expectTypeOf<sdk.Participant>().toEqualTypeOf<ParticipantDto>();
    expectTypeOf<sdk.Conversation>().toEqualTypeOf<ConversationDto>();
    expectTypeOf<sdk.Message>().toEqualTypeOf<MessageDto>();
    expectTypeOf<sdk.ConversationPage>().toEqualTypeOf<Out<typeof ConversationPage>>();
    expectTypeOf<sdk.MessagePage>().toEqualTypeOf<Out<typeof MessagePage>>();
    expectTypeOf<sdk.Ticket>().toEqualTypeOf<Out<typeof Ticket>>();
    expectTypeOf<sdk.InboxState>().toEqualTypeOf<Out<typeof InboxTotals>>();
    expectTypeOf<sdk.ErrorCode>().toEqualTypeOf<ErrorCode>();
    expect(Object.keys(ERROR_STATUS).sort()).toEqual([...errorCodes].sort());
  });

  it("has the same frames on both sockets, in both directions", () => {
    expectTypeOf<sdk.ServerFrame>().toEqualTypeOf<ServerFrame>();
    expectTypeOf<sdk.InboxFrame>().toEqualTypeOf<InboxFrame>();
    expectTypeOf<sdk.ClientFrame>().toEqualTypeOf<ClientFrame>();
    for (const frame of serverFrames) expect(ServerFrameSchema.safeParse(frame).success, frame.type).toBe(true);
    for (const frame of inboxFrames) expect(InboxFrameSchema.safeParse(frame).success, frame.type).toBe(true);
    // Every frame type of each socket is in the samples: one added on the server fails here too.
    expect(serverFrames.map((f) => f.type).sort()).toEqual(
      ServerFrameSchema.options.map((o) => o.shape.type.value).sort(),
    );
    expect(inboxFrames.map((f) => f.type).sort()).toEqual(
      InboxFrameSchema.options.map((o) => o.shape.type.value).sort(),
    );
  });
});

// A value of every union member, typed by the SDK alone. `satisfies Record<sdk.ErrorCode, true>` makes the
// list complete: a code missing from it, or one the SDK does not know, does not compile.
const errorCodes = Object.keys({
  validation_failed: true,
  unauthenticated: true,
  forbidden: true,
  not_found: true,
  idempotency_conflict: true,
  payload_too_large: true,
  upgrade_required: true,
  rate_limited: true,
  unavailable: true,
  internal: true,
} satisfies Record<sdk.ErrorCode, true>);

const time = "2026-11-25T12:00:00.000Z";
const participant: sdk.Participant = {
  userId: "bob",
  role: "member",
  joinedAt: time,
  lastReadSeq: 1,
  lastDeliveredSeq: 1,
};
const message: sdk.Message = {
  id: "m1",
  conversationId: "c1",
  seq: 1,
  senderId: "bob",
  content: "hi",
  localId: null,
  createdAt: time,
  editedAt: null,
  deletedAt: null,
};
const conversation: sdk.Conversation = {
  id: "c1",
  title: null,
  direct: true,
  createdBy: "alice",
  createdAt: time,
  updatedAt: time,
  rev: 3,
  lastSeq: 1,
  lastMessage: { seq: 1, senderId: "bob", preview: "hi", createdAt: time },
  participants: [participant],
  unreadCount: 0,
};
const totals = { version: 4, unreadTotal: 0, unreadConversations: 0 };

const serverFrames: sdk.ServerFrame[] = [
  {
    type: "ready",
    conversationId: "c1",
    userId: "bob",
    lastSeq: 1,
    participants: [participant],
    online: [],
    typing: [],
  },
  { type: "message", message },
  { type: "resync", fromSeq: 0 },
  { type: "ack", localId: "l1", message },
  { type: "message_updated", message },
  { type: "typing", userId: "bob", typing: true },
  { type: "presence", userId: "bob", online: false },
  { type: "receipt", userId: "bob", lastReadSeq: 1, lastDeliveredSeq: 1 },
  { type: "participants", participants: [participant] },
  { type: "error", code: "rate_limited", message: "slow down", ref: "l1", retryAfterMs: 200 },
];

const inboxFrames: sdk.InboxFrame[] = [
  { type: "inbox_ready", userId: "bob", ...totals },
  { type: "conversation", conversation, ...totals },
  { type: "conversation_removed", conversationId: "c1", ...totals },
  { type: "resync", fromVersion: 2 },
  { type: "error", code: "validation_failed", message: "only ping" },
];
