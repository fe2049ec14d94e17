import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { ABUSE_STRIKES, ABUSE_WINDOW_MS, Buckets, type Strikes, strike, takeToken } from "./buckets";

describe("takeToken", () => {
  const rule = { size: 3, refillPerSecond: 2 };

  it("starts full, empties, and says how long until the next token", () => {
    let bucket: Parameters<typeof takeToken>[0];
    for (let i = 0; i < 3; i++) {
      const taken = takeToken(bucket, rule, 1_000);
      expect(taken.allowed).toBe(true);
      bucket = taken.bucket;
    }
    const refused = takeToken(bucket, rule, 1_000);
    expect(refused).toMatchObject({ allowed: false, retryAfterMs: 500 });
    // Half a refill later a token is back, and no more than one.
    expect(takeToken(refused.bucket, rule, 1_500).allowed).toBe(true);
    expect(takeToken(takeToken(refused.bucket, rule, 1_500).bucket, rule, 1_500).allowed).toBe(false);
  });

  it("never holds more than its size, however long it rested", () => {
    const rested = takeToken({ tokens: 0, at: 0 }, rule, 3_600_000);
    expect(rested.bucket.tokens).toBe(2);
  });
});

describe("Buckets", () => {
  it("keeps one bucket per key and refuses with rate_limited and the wait in seconds", () => {
    const buckets = new Buckets({ size: 1, refillPerSecond: 0.5 }, "Slow down");
    buckets.take("a", 0);
    buckets.take("b", 0);
    let refusal: unknown;
    try {
      buckets.take("a", 0);
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toBeInstanceOf(ApiError);
    expect(refusal).toMatchObject({ code: "rate_limited", message: "Slow down", retryAfter: 2 });
    expect(() => buckets.take("a", 2_000)).not.toThrow();
  });
});

describe("strike", () => {
  it("calls a socket abusive at its 50th refusal within the window, whatever was accepted in between", () => {
    let strikes: Strikes | undefined;
    for (let i = 1; i < ABUSE_STRIKES; i++) {
      const counted = strike(strikes, i * 10);
      expect(counted.abusive).toBe(false);
      strikes = counted.strikes;
    }
    expect(strike(strikes, ABUSE_STRIKES * 10).abusive).toBe(true);
  });

  it("starts again from one once the window has passed", () => {
    const old = { count: ABUSE_STRIKES - 1, since: 0 };
    expect(strike(old, ABUSE_WINDOW_MS)).toEqual({ strikes: { count: 1, since: ABUSE_WINDOW_MS }, abusive: false });
    expect(strike(old, ABUSE_WINDOW_MS - 1).abusive).toBe(true);
  });
});
