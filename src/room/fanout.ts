import type { ServerFrame } from "../schemas";

// The room's sockets and the frames sent to them. A socket's state is its attachment, so that it survives
// hibernation; the map of sockets is rebuilt from the runtime after a wake-up.

export interface Attachment {
  userId: string;
  lastSeenAt: number;
}

export interface Audience {
  except?: WebSocket | undefined;
  exceptUser?: string | undefined;
  /** Only these users' sockets; everyone when absent. */
  only?: ReadonlySet<string> | undefined;
}

export class Sockets {
  #map: Map<WebSocket, Attachment> | undefined;

  constructor(
    private readonly ctx: DurableObjectState,
    /** Whether a user found on a socket after a wake-up still belongs here; others are closed. */
    private readonly belongs: (userId: string) => boolean,
    /** A user's last socket here is gone, however it went: closed by either side, or failing a send. */
    private readonly gone: (userId: string) => void,
  ) {}

  /** The open sockets and their state; after a wake-up, rebuilt from the attachments. */
  all(): Map<WebSocket, Attachment> {
    if (!this.#map) {
      this.#map = new Map();
      for (const ws of this.ctx.getWebSockets()) {
        const attachment = ws.deserializeAttachment() as Attachment | null;
        if (!attachment) continue;
        // A removed user's socket whose client never finished the close must not come back.
        if (this.belongs(attachment.userId)) this.#map.set(ws, attachment);
        else closeSocket(ws, 4403, "removed from the conversation");
      }
    }
    return this.#map;
  }

  get(ws: WebSocket): Attachment | undefined {
    return this.all().get(ws);
  }

  accept(ws: WebSocket, userId: string): void {
    this.ctx.acceptWebSocket(ws, [userId]);
    this.#track(ws, { userId, lastSeenAt: Date.now() });
  }

  /** The socket sent something: written back at most every few seconds, fresh enough for the idle sweep. */
  touch(ws: WebSocket, attachment: Attachment): void {
    const now = Date.now();
    if (now - attachment.lastSeenAt > 5_000) this.#track(ws, { ...attachment, lastSeenAt: now });
  }

  #track(ws: WebSocket, attachment: Attachment): void {
    ws.serializeAttachment(attachment);
    this.all().set(ws, attachment);
  }

  ofUser(userId: string): WebSocket[] {
    return [...this.all()].filter(([, a]) => a.userId === userId).map(([ws]) => ws);
  }

  online(): string[] {
    return [...new Set([...this.all().values()].map((a) => a.userId))];
  }

  /** Forgets a socket its client closed (or that failed); its user is gone when it was their last. */
  forget(ws: WebSocket): void {
    const attachment = this.get(ws);
    if (!attachment || !this.all().delete(ws)) return;
    if (this.ofUser(attachment.userId).length === 0) this.gone(attachment.userId);
  }

  /** Closes a socket from this side. */
  close(ws: WebSocket, code: number, reason: string): void {
    this.forget(ws);
    closeSocket(ws, code, reason);
  }

  /** Sends one frame. */
  sendTo(ws: WebSocket, frame: ServerFrame): void {
    this.#sendText(ws, JSON.stringify(frame));
  }

  /** Sends one frame, serialized once, to every socket of the audience. */
  broadcast(frame: ServerFrame, audience: Audience = {}): void {
    const text = JSON.stringify(frame);
    for (const [ws, attachment] of this.all()) {
      if (ws === audience.except || attachment.userId === audience.exceptUser) continue;
      if (audience.only && !audience.only.has(attachment.userId)) continue;
      this.#sendText(ws, text);
    }
  }

  /**
   * A socket that cannot take a frame is closed, not only forgotten: a client whose socket is left open gets
   * `pong`s from the runtime and would never reconnect.
   */
  #sendText(ws: WebSocket, text: string): void {
    try {
      ws.send(text);
    } catch {
      this.close(ws, 1011, "could not send");
    }
  }
}

/** Closes a socket that may be closed already. */
export function closeSocket(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closed
  }
}
