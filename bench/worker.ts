// The bench Worker: the product, unchanged, plus what the benchmarks need in the same runtime.
//
// - Every request that is not under /bench/ goes to the product's own fetch handler. The D1 binding it sees is
//   wrapped to count round trips, and the count comes back in the `X-Bench-D1-Round-Trips` response header.
// - `GET /bench/floor/:room/ws?user=` opens a socket on a FloorRoom: a Durable Object that only broadcasts
//   (no storage, no validation, no auth), the floor that the product's send path is measured against.
// - `GET /bench/noop` answers `{}` at once: the floor of a REST request through this runtime.
// - Everything else the product exports (ConversationRoom, its queue consumer) is re-exported as is.
import { DurableObject } from "cloudflare:workers";
import type { Env as ProductEnv } from "../src/env";
import product from "../src/index";

// Every class the product exports (its Durable Objects), as they are.
export * from "../src/index";

interface BenchEnv extends ProductEnv {
  FLOOR: DurableObjectNamespace<FloorRoom>;
}

const ROUND_TRIPS_HEADER = "X-Bench-D1-Round-Trips";

/** What the floor keeps on each socket: who it is, and the last seq sent from it. */
interface Seat {
  userId: string;
  seq: number;
}

/**
 * Broadcast only: a sent frame gets the next in-memory seq, every other socket gets it as a `message` frame
 * (the product's frame shape, so that both cost the same on the wire and the load generator reads both), and
 * the sender gets an `ack`. Sockets are hibernatable, as in the product; the seq survives hibernation on the
 * sockets' attachments (a full run's rounds leave the floor idle long enough to be hibernated).
 */
export class FloorRoom extends DurableObject<BenchEnv> {
  #seq = 0;
  #sockets: Set<WebSocket> | undefined;

  #all(): Set<WebSocket> {
    if (!this.#sockets) {
      this.#sockets = new Set(this.ctx.getWebSockets());
      // Woken from hibernation: carry on after the highest seq any socket was last sent from.
      for (const ws of this.#sockets) {
        this.#seq = Math.max(this.#seq, (ws.deserializeAttachment() as Seat | null)?.seq ?? 0);
      }
    }
    return this.#sockets;
  }

  override async fetch(request: Request): Promise<Response> {
    const userId = new URL(request.url).searchParams.get("user") ?? "anonymous";
    const sockets = this.#all();
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    sockets.add(server);
    server.serializeAttachment({ userId, seq: this.#seq } satisfies Seat);
    server.send(JSON.stringify({ type: "ready", userId, lastSeq: this.#seq }));
    return new Response(null, { status: 101, webSocket: client });
  }

  override webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): void {
    if (typeof data !== "string") return;
    const frame = JSON.parse(data) as { localId?: string; content?: string };
    const seat = ws.deserializeAttachment() as Seat;
    this.#all();
    const seq = ++this.#seq;
    // The seq lives in memory; kept on the sender's socket too, so that it survives hibernation (no storage).
    ws.serializeAttachment({ userId: seat.userId, seq } satisfies Seat);
    const message = {
      id: `floor-${seq}`,
      conversationId: "floor",
      seq,
      senderId: seat.userId,
      content: frame.content ?? "",
      localId: frame.localId ?? null,
      createdAt: new Date().toISOString(),
      editedAt: null,
      deletedAt: null,
    };
    const text = JSON.stringify({ type: "message", message });
    for (const other of this.#all()) {
      if (other === ws) continue;
      try {
        other.send(text);
      } catch {
        this.#all().delete(other);
      }
    }
    ws.send(JSON.stringify({ type: "ack", localId: message.localId, message }));
  }

  override webSocketClose(ws: WebSocket, code: number, reason: string): void {
    this.#all().delete(ws);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override webSocketError(ws: WebSocket): void {
    this.#all().delete(ws);
  }
}

/** A D1Database that counts round trips: a batch is one, each statement executed on its own is one. */
function countingD1(real: D1Database): { db: D1Database; roundTrips: () => number } {
  let trips = 0;
  const counted = (stmt: D1PreparedStatement): D1PreparedStatement => {
    // The real statement object, patched on the instance, so that the real batch() accepts it.
    const patchable = stmt as unknown as Record<string, (...args: unknown[]) => unknown>;
    const bind = stmt.bind.bind(stmt);
    patchable.bind = (...values: unknown[]) => counted(bind(...values));
    for (const method of ["all", "run", "first", "raw"] as const) {
      const original = (stmt[method] as (...args: unknown[]) => Promise<unknown>).bind(stmt);
      patchable[method] = (...args: unknown[]) => {
        trips++;
        return original(...args);
      };
    }
    return stmt;
  };
  const db: D1Database = {
    prepare: (query) => counted(real.prepare(query)),
    batch: (statements) => {
      trips++;
      return real.batch(statements);
    },
    exec: (query) => {
      trips++;
      return real.exec(query);
    },
    withSession: (constraint) => real.withSession(constraint),
    dump: () => real.dump(),
  };
  return { db, roundTrips: () => trips };
}

const FLOOR_PATH = /^\/bench\/floor\/([A-Za-z0-9._-]{1,64})\/ws$/;

export default {
  ...product,
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const floor = FLOOR_PATH.exec(url.pathname);
    if (floor?.[1]) {
      if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") return new Response(null, { status: 426 });
      return env.FLOOR.getByName(floor[1]).fetch(request);
    }
    if (url.pathname === "/bench/noop") return Response.json({});
    if (url.pathname.startsWith("/bench/")) return new Response(null, { status: 404 });

    // A WebSocket upgrade keeps its request open as long as the socket: leave it exactly as the product has it.
    if (request.headers.get("Upgrade")) return product.fetch(request, env, ctx);
    const d1 = countingD1(env.DB);
    const bindings = { ...env, DB: d1.db } satisfies BenchEnv;
    const response = await product.fetch(request, bindings, ctx);
    if (response.status === 101) return response;
    const counted = new Response(response.body, response);
    counted.headers.set(ROUND_TRIPS_HEADER, String(d1.roundTrips()));
    return counted;
  },
} satisfies ExportedHandler<BenchEnv>;
