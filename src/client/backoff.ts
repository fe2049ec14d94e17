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
