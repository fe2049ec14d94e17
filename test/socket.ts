import { exports } from "cloudflare:workers";
import type { InboxFrame, ServerFrame } from "../src/schemas";
import { tokenFor } from "./helpers";

/** A test client of a socket (a conversation's by default, or an inbox): records every frame and close. */
export class TestSocket<Frame extends { type: string } = ServerFrame> {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;
  #waiters: (() => void)[] = [];

  constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (event) => {
      this.frames.push(
        typeof event.data === "string" && event.data !== "pong" ? JSON.parse(event.data) : { type: event.data },
      );
      this.#wake();
    });
    ws.addEventListener("close", (event) => {
      this.closed = { code: event.code, reason: event.reason };
      this.#wake();
    });
    ws.accept();
  }

  #wake() {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  send(frame: unknown) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Waits until `ready(frames)` holds, or fails after `timeoutMs`. */
  async until<T>(
    test: (s: TestSocket<Frame>) => T | undefined | false,
    timeoutMs = 10_000,
    what = "a frame",
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = test(this);
      if (value) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The first frame of `type` (after `from`) that matches `match`. */
  next<K extends Frame["type"]>(type: K, match: (f: Extract<Frame, { type: K }>) => boolean = () => true, from = 0) {
    return this.until(
      (s) => s.frames.slice(from).find((f): f is Extract<Frame, { type: K }> => f.type === type && match(f as never)),
      10_000,
      `a ${type} frame`,
    );
  }

  of<K extends Frame["type"]>(type: K): Extract<Frame, { type: K }>[] {
    return this.frames.filter((f): f is Extract<Frame, { type: K }> => f.type === type);
  }

  waitClosed() {
    return this.until((s) => s.closed, 10_000, "the close");
  }

  close(code = 1000) {
    this.ws.close(code, "bye");
  }
}

export interface ConnectOptions {
  since?: number;
  ticket?: string;
  headers?: Record<string, string>;
}

/** Opens the conversation's socket as `userId` through the Worker; the first frame is `ready`. */
export async function connect(conversationId: string, userId: string | null, options: ConnectOptions = {}) {
  const socket = new TestSocket(await accepted(await upgrade(conversationId, userId, options)));
  await socket.next("ready");
  return socket;
}

/** Opens the user's inbox socket through the Worker; the first frame is `inbox_ready`. */
export async function connectInbox(userId: string | null, options: ConnectOptions = {}) {
  const socket = new TestSocket<InboxFrame>(await accepted(await upgradeInbox(userId, options)));
  await socket.next("inbox_ready");
  return socket;
}

export const upgrade = (conversationId: string, userId: string | null, options: ConnectOptions = {}) =>
  upgradeAt(`/v1/conversations/${conversationId}/ws`, userId, options);

export const upgradeInbox = (userId: string | null, options: ConnectOptions = {}) =>
  upgradeAt("/v1/inbox/ws", userId, options);

async function upgradeAt(path: string, userId: string | null, options: ConnectOptions) {
  const params = new URLSearchParams();
  if (options.since !== undefined) params.set("since", String(options.since));
  if (options.ticket !== undefined) params.set("ticket", options.ticket);
  const headers: Record<string, string> = { Upgrade: "websocket", ...options.headers };
  if (userId) headers.Authorization = `Bearer ${await tokenFor(userId)}`;
  return exports.default.fetch(new Request(`https://chat.test${path}?${params}`, { headers }));
}

async function accepted(res: Response): Promise<WebSocket> {
  if (res.status !== 101 || !res.webSocket) throw new Error(`upgrade failed: ${res.status} ${await res.text()}`);
  return res.webSocket;
}
