// What both sockets share around their connection: their listeners, and the browser's network events.

/** Listeners by event, for a socket's `on` and its emits. */
export class Listeners<Events> {
  readonly #byEvent = new Map<keyof Events, Set<(value: never) => void>>();

  /** Adds a listener; returns how to remove it. */
  on<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): () => boolean {
    const set = this.#byEvent.get(event) ?? new Set();
    this.#byEvent.set(event, set);
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const listener of this.#byEvent.get(event) ?? []) (listener as (v: typeof value) => void)(value);
  }
}

/**
 * In a browser: `offline` when the device goes offline (drop the socket: it may hang for minutes), `online`
 * when it is back (reconnect at once, without waiting out the backoff). Elsewhere nothing. Returns how to stop.
 */
export function watchNetwork(offline: () => void, online: () => void): () => void {
  const page = globalThis as {
    document?: unknown;
    addEventListener?: (type: string, listener: () => void) => void;
    removeEventListener?: (type: string, listener: () => void) => void;
  };
  if (!page.document || !page.addEventListener) return () => {};
  page.addEventListener("offline", offline);
  page.addEventListener("online", online);
  return () => {
    page.removeEventListener?.("offline", offline);
    page.removeEventListener?.("online", online);
  };
}
