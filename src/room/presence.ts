import { TYPING_TTL_MS } from "../domain/messages";

// Who is typing: in memory, mirrored in storage so that an eviction cannot leave a typist unended. Typing
// is never history: it is not in the log, and it is never replayed.

const KEY = "typing";

export class Typing {
  #until: Map<string, number> | undefined;

  constructor(private readonly kv: SyncKvStorage) {}

  #map(): Map<string, number> {
    this.#until ??= new Map(Object.entries(this.kv.get<Record<string, number>>(KEY) ?? {}));
    return this.#until;
  }

  /** Sets a user's state; returns whether it changed (a refresh does not). */
  set(userId: string, typing: boolean, now: number): boolean {
    const until = this.#map();
    const was = until.has(userId);
    if (typing) until.set(userId, now + TYPING_TTL_MS);
    else until.delete(userId);
    if (typing || was) this.kv.put(KEY, Object.fromEntries(until));
    return typing !== was;
  }

  has(userId: string): boolean {
    return this.#map().has(userId);
  }

  users(now: number): string[] {
    return [...this.#map()].filter(([, at]) => at > now).map(([userId]) => userId);
  }

  expired(now: number): string[] {
    return [...this.#map()].filter(([, at]) => at <= now).map(([userId]) => userId);
  }

  /** When the next typing state ends by itself, if any. */
  nextExpiry(): number | null {
    const next = Math.min(...this.#map().values());
    return Number.isFinite(next) ? next : null;
  }
}
