import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { Buckets, takeToken } from "./buckets";

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
