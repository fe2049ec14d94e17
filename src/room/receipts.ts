import type { ServerFrame } from "../schemas";
import type { Sockets } from "./fanout";

/** Frames a delivered flush sends between two turns of the event loop, so that messages are not held up. */
const RECEIPT_FRAMES_PER_TURN = 500;

/**
 * Delivered receipts on their way to the senders of the messages they cover (the users who show delivered
 * ticks). A flush in a busy group is thousands of frames; sent in one go they held every message behind them
 * for hundreds of milliseconds, so they go out a few hundred frames per turn, and a newer receipt of the same
 * user replaces one still due.
 */
export class Receipts {
  #due = new Map<string, { frame: ServerFrame; audience: Set<string> }>();
  #sending = false;

  constructor(private readonly sockets: Sockets) {}

  queue(frame: ServerFrame, aboutUser: string, audience: string[]): void {
    if (audience.length === 0) return;
    const before = this.#due.get(aboutUser)?.audience ?? new Set<string>();
    for (const u of audience) before.add(u);
    this.#due.set(aboutUser, { frame, audience: before });
    void this.#send();
  }

  /** A read receipt of this user went to everyone: an older delivered one must not follow it. */
  cancel(aboutUser: string): void {
    this.#due.delete(aboutUser);
  }

  async #send(): Promise<void> {
    if (this.#sending) return;
    this.#sending = true;
    try {
      while (this.#due.size > 0) {
        let turn = Math.max(1, Math.floor(RECEIPT_FRAMES_PER_TURN / Math.max(1, this.sockets.all().size)));
        for (const [userId, { frame, audience }] of this.#due) {
          this.#due.delete(userId);
          this.sockets.broadcast(frame, { only: audience, exceptUser: userId });
          if (--turn === 0) break;
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } finally {
      this.#sending = false;
    }
  }
}
