import { type MockInstance, vi } from "vitest";

/** One request that left the Worker, as a push service or the webhook received it. */
export interface Sent {
  url: string;
  method: string;
  headers: Headers;
  body: Uint8Array;
  text: string;
}

/**
 * Intercepts the Worker's outbound fetches to the test hosts (`*.push.test`): records each and answers with
 * the status set for its URL (201 by default). Everything else goes on to the real fetch.
 */
export class Outbound {
  readonly sent: Sent[] = [];
  #statuses = new Map<string, number[]>();
  #spy: MockInstance<typeof fetch> | undefined;

  install(): this {
    const real = globalThis.fetch;
    this.#spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
      const request = new Request(input, init);
      if (!new URL(request.url).hostname.endsWith(".push.test")) return real(input, init);
      const body = new Uint8Array(await request.arrayBuffer());
      this.sent.push({
        url: request.url,
        method: request.method,
        headers: request.headers,
        body,
        text: new TextDecoder().decode(body),
      });
      const queued = this.#statuses.get(request.url);
      const status = (queued && queued.length > 1 ? queued.shift() : queued?.[0]) ?? 201;
      return new Response(null, { status });
    });
    return this;
  }

  restore(): void {
    this.#spy?.mockRestore();
  }

  /** Answers requests to `url` with these statuses in turn (the last one again after that). */
  answer(url: string, ...statuses: number[]): void {
    this.#statuses.set(url, statuses);
  }

  to(url: string): Sent[] {
    return this.sent.filter((s) => s.url === url);
  }
}
