// How both sockets of the SDK (a conversation's, the inbox) tell a dead connection from a quiet one.

export interface KeepAliveOptions {
  /** `ping` this often. */
  pingIntervalMs: number;
  /** A socket that answers nothing within this long after a `ping` is taken for dead and closed (4000). */
  pongTimeoutMs: number;
}

export interface KeepAlive {
  /** Anything arrived (a `pong` or a frame): the connection is alive, the pending deadline is off. */
  heard(): void;
  /** The socket closed: no more pings, no deadline. */
  stop(): void;
}

/**
 * Pings `ws` at once and then every `pingIntervalMs`; a ping arms a deadline unless one is armed already, and
 * whatever arrives disarms it, so every ping after an answer is watched again.
 */
export function keepAlive(
  ws: { send(data: string): void; close(code?: number, reason?: string): void },
  options: KeepAliveOptions,
): KeepAlive {
  // A socket that has carried no frame from its client does not finish a close the server starts (seen with
  // workerd under wrangler dev: the client stays CLOSING). One `ping` at once avoids that; the runtime answers
  // it without waking the conversation or the inbox.
  ws.send("ping");
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const heard = () => {
    clearTimeout(deadline);
    deadline = undefined;
  };
  const pinger = setInterval(() => {
    try {
      ws.send("ping");
    } catch {
      // Closing already: its close event stops this.
      return;
    }
    deadline ??= setTimeout(() => ws.close(4000, "no answer to ping"), options.pongTimeoutMs);
  }, options.pingIntervalMs);
  return {
    heard,
    stop() {
      clearInterval(pinger);
      heard();
    },
  };
}
