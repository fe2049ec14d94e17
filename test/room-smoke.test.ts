import { describe, expect, it } from "vitest";
import { call, createConversation, uniqueUser } from "./helpers";
import { connect } from "./socket";

describe("room smoke", () => {
  it("sends over a socket and over REST, with acks and broadcasts", async () => {
    const alice = uniqueUser("alice");
    const bob = uniqueUser("bob");
    const conv = await createConversation(alice, [bob]);
    const a = await connect(conv.id, alice);
    const b = await connect(conv.id, bob);
    a.send({ type: "send", localId: "l1", content: "hello" });
    const ack = await a.next("ack");
    expect(ack.message.seq).toBe(1);
    const got = await b.next("message");
    expect(got.message.content).toBe("hello");
    const res = await call(`/v1/conversations/${conv.id}/messages`, {
      method: "POST",
      as: bob,
      body: { content: "hi", localId: "x" },
    });
    expect(res.status).toBe(201);
    const m2 = await a.next("message", (f) => f.message.seq === 2);
    expect(m2.message.senderId).toBe(bob);
    const hist = await call(`/v1/conversations/${conv.id}/messages`, { as: alice });
    const body = (await hist.json()) as { messages: { seq: number }[] };
    expect(body.messages.map((m) => m.seq)).toEqual([2, 1]);
    a.close();
    b.close();
  });
});
