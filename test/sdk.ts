import { exports } from "cloudflare:workers";
import { ChatApiError, ChatClient, type SocketConnector, type WebSocketLike } from "../src/client";
import { tokenFor } from "./helpers";

// The SDK against the real Worker, for the tests of the SDK: REST through the Worker's fetch handler, and
// sockets upgraded through it.

/** A client of `userId`; `fetch` may wrap the Worker's (to hold or fail a request). */
export const clientFor = (userId: string, fetch = (r: Request) => exports.default.fetch(r)) =>
  new ChatClient({ baseUrl: "https://chat.test", token: () => tokenFor(userId), fetch });

export const workerdConnector: SocketConnector = async (url) => {
  const res = await exports.default.fetch(
    new Request(url.replace(/^ws/, "http"), { headers: { Upgrade: "websocket" } }),
  );
  if (!res.webSocket) throw new ChatApiError(res.status, "network", `upgrade failed: ${res.status}`);
  res.webSocket.accept();
  return res.webSocket as unknown as WebSocketLike;
};

/** A promise and the function that resolves it: something a test holds and lets go of. */
export function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}
