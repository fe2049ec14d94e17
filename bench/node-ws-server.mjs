// The Node reference: a minimal `ws` broadcast server with the FloorRoom's protocol, and nothing else.
// `node bench/node-ws-server.mjs <port>` listens on 127.0.0.1 only. A socket at /floor/<room>/ws?user=<id> gets
// `ready`; a sent `{localId, content}` gets the room's next seq, goes to every other socket of the room as a
// `message` frame and comes back to the sender as `ack`. No storage, no validation, no auth.
import { createServer } from "node:http";
import { WebSocketServer } from "ws";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node bench/node-ws-server.mjs <port>");
  process.exit(2);
}

/** @type {Map<string, { seq: number, sockets: Set<import("ws").WebSocket> }>} */
const rooms = new Map();
const ROOM_PATH = /^\/floor\/([A-Za-z0-9._-]{1,64})\/ws$/;

const http = createServer((req, res) => {
  // `/gc` (with --expose-gc): a full collection, then the JS heap in use, for the memory scenario.
  if (req.url === "/gc" && typeof globalThis.gc === "function") {
    globalThis.gc();
    globalThis.gc();
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ usedSize: process.memoryUsage().heapUsed }));
    return;
  }
  res.writeHead(req.url === "/health" ? 200 : 404, { "Content-Type": "application/json" });
  res.end(req.url === "/health" ? '{"ok":true}' : "{}");
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

http.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  const name = ROOM_PATH.exec(url.pathname)?.[1];
  if (!name) {
    socket.destroy();
    return;
  }
  const userId = url.searchParams.get("user") ?? "anonymous";
  wss.handleUpgrade(req, socket, head, (ws) => {
    let room = rooms.get(name);
    if (!room) {
      room = { seq: 0, sockets: new Set() };
      rooms.set(name, room);
    }
    const joined = room;
    joined.sockets.add(ws);
    ws.send(JSON.stringify({ type: "ready", userId, lastSeq: joined.seq }));
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      const frame = JSON.parse(data.toString());
      const seq = ++joined.seq;
      const message = {
        id: `node-${seq}`,
        conversationId: name,
        seq,
        senderId: userId,
        content: frame.content ?? "",
        localId: frame.localId ?? null,
        createdAt: new Date().toISOString(),
        editedAt: null,
        deletedAt: null,
      };
      const text = JSON.stringify({ type: "message", message });
      for (const other of joined.sockets) if (other !== ws) other.send(text);
      ws.send(JSON.stringify({ type: "ack", localId: message.localId, message }));
    });
    ws.on("close", () => {
      joined.sockets.delete(ws);
      if (joined.sockets.size === 0) rooms.delete(name);
    });
  });
});

http.listen(port, "127.0.0.1");
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
