// How both sockets of the SDK (a conversation's, the inbox) wait between reconnects.

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/**
 * The wait before reconnect `attempt` (0 first): exponential from `initialMs` to `maxMs`, four times as long
 * after a close for abuse (4429), each with up to 50 % random jitter so that clients do not come back at once.
 */
export function reconnectDelayMs(backoff: Backoff, attempt: number, closeCode: number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt) * (closeCode === 4429 ? 4 : 1);
  return base * (0.5 + Math.random() * 0.5);
}

/** Waits `ms`; `onWake` receives a function that ends the wait early (a reconnect asked for now). */
export function wakeableSleep(ms: number, onWake: (wake: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    onWake(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * A socket's reconnects: the attempts since its last good connection, and the wait before the next one, which
 * `now()` ends early (or skips, when none is under way) and `wake()` ends (the socket closes for good).
 */
export class Reconnects {
  #attempt = 0;
  #now = false;
  #wake: (() => void) | undefined;

  constructor(private readonly backoff: Backoff) {}

  /** Failed attempts since the last good connection (0: the next is the first). */
  get attempt(): number {
    return this.#attempt;
  }

  /** A connection worked: the next failure waits the shortest time again. */
  succeeded(): void {
    this.#attempt = 0;
  }

  /** Reconnect without waiting out the backoff. */
  now(): void {
    this.#now = true;
    this.#wake?.();
  }

  /** Ends a wait under way. */
  wake(): void {
    this.#wake?.();
  }

  /** The wait after a connection closed with `closeCode`, unless a reconnect was asked for now. */
  async wait(closeCode: number): Promise<void> {
    if (this.#now) {
      this.#now = false;
      this.#attempt = 0;
      return;
    }
    await wakeableSleep(reconnectDelayMs(this.backoff, this.#attempt++, closeCode), (wake) => {
      this.#wake = wake;
    });
    this.#wake = undefined;
  }
}

/**
 * Runs `attempt` until it resolves, waiting `reconnectDelayMs` after each failure that `retry` accepts (it is
 * given the error, and says why to whoever shows it); rejects with the first failure it does not accept, or
 * with the last one once `stopped()` after a wait. `onWait` receives the function that ends a wait early.
 */
export async function retrying<T>(
  attempt: () => Promise<T>,
  options: {
    backoff: Backoff;
    retry: (err: unknown) => boolean;
    stopped: () => boolean;
    onWait: (wake: () => void) => void;
  },
): Promise<T> {
  for (let failures = 0; ; failures++) {
    try {
      return await attempt();
    } catch (err) {
      if (!options.retry(err)) throw err;
      await wakeableSleep(reconnectDelayMs(options.backoff, failures, 0), options.onWait);
      if (options.stopped()) throw err;
    }
  }
}
