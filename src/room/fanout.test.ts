import { describe, expect, it } from "vitest";
import { Sockets } from "./fanout";

/**
 * A socket whose send can be made to throw, as the runtime's does on a connection that broke under it: that
 * cannot be caused on demand through workerd, so the fan-out is tried here against this stand-in.
 */
class FakeSocket {
  sent: string[] = [];
  closed: { code: number; reason: string } | undefined;
  broken = false;
  #attachment: unknown;

  send(text: string) {
    if (this.broken) throw new Error("Network connection lost.");
    this.sent.push(text);
  }
  close(code: number, reason: string) {
    this.closed = { code, reason };
  }
  serializeAttachment(value: unknown) {
    this.#attachment = value;
  }
  deserializeAttachment() {
    return this.#attachment;
  }
}

function room() {
  const accepted: FakeSocket[] = [];
  const ctx = { getWebSockets: () => accepted, acceptWebSocket: (ws: FakeSocket) => accepted.push(ws) };
  const gone: string[] = [];
  const sockets = new Sockets(
    ctx as unknown as DurableObjectState,
    () => true,
    (userId) => gone.push(userId),
  );
  const join = (userId: string) => {
    const ws = new FakeSocket();
    sockets.accept(ws as unknown as WebSocket, userId);
    return ws;
  };
  return { sockets, gone, join };
}

const frame = { type: "presence", userId: "x", online: true } as const;

describe("Sockets", () => {
  it("closes a socket whose send throws (so its client reconnects), and its user is gone with their last", () => {
    const { sockets, gone, join } = room();
    const alice = join("alice");
    const [bob1, bob2] = [join("bob"), join("bob")];

    bob1.broken = true;
    sockets.broadcast(frame);
    expect(bob1.closed).toEqual({ code: 1011, reason: "could not send" });
    expect(sockets.ofUser("bob")).toHaveLength(1);
    expect(gone).toEqual([]);

    bob2.broken = true;
    sockets.sendTo(bob2 as unknown as WebSocket, frame);
    expect(bob2.closed?.code).toBe(1011);
    expect(gone).toEqual(["bob"]);
    expect(sockets.online()).toEqual(["alice"]);
    // The others were not held back, and a closed socket is not sent to again.
    sockets.broadcast(frame);
    expect(alice.sent).toHaveLength(2);
    expect(bob2.sent).toHaveLength(1);
  });

  it("tells of a user's last socket once, whichever side closed it", () => {
    const { sockets, gone, join } = room();
    const [a1, a2] = [join("alice"), join("alice")];
    sockets.close(a1 as unknown as WebSocket, 1000, "bye");
    sockets.forget(a1 as unknown as WebSocket);
    expect(gone).toEqual([]);
    sockets.forget(a2 as unknown as WebSocket);
    sockets.close(a2 as unknown as WebSocket, 1000, "bye");
    expect(gone).toEqual(["alice"]);
  });
});
