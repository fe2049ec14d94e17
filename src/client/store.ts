// The observable state that the SDK's stores (the conversation list, one conversation) share: an immutable
// snapshot replaced on every change, and listeners told after it. This is the shape React's
// useSyncExternalStore asks for (a stable `subscribe`, a `getSnapshot` that returns the same object until
// something changed), and it is as easy to use without React.

export type Listener = () => void;

export class SnapshotStore<T extends object> {
  #snapshot: T;
  readonly #listeners = new Set<Listener>();

  constructor(initial: T) {
    this.#snapshot = initial;
  }

  /** Calls `listener` after every change; returns the function that stops it. Bound: pass it as it is. */
  readonly subscribe = (listener: Listener): (() => void) => {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  };

  /** The state now: the same object until the next change, so it can be compared by reference. Bound. */
  readonly getSnapshot = (): T => this.#snapshot;

  /** Replaces the fields given (a new snapshot object) and tells the listeners; nothing when nothing changed. */
  protected update(patch: Partial<T>): void {
    const current = this.#snapshot;
    if (Object.entries(patch).every(([key, value]) => Object.is(current[key as keyof T], value))) return;
    this.#snapshot = { ...current, ...patch };
    for (const listener of [...this.#listeners]) listener();
  }

  /** No listener is told anything more. */
  protected silence(): void {
    this.#listeners.clear();
  }
}
