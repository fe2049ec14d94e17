// REST latency: requests of several kinds in turn (one of each per round, so that drift in a noisy machine
// hits every kind alike), after a few rounds of warm-up, one at a time. Each kind also reports the D1 round
// trips that the bench Worker counted for it. The `/bench/noop` route is the floor: the runtime's own cost.
import { histogram, percentiles } from "./load.mjs";

/**
 * @typedef {object} Kind
 * @property {string} path
 * @property {string} user
 * @property {(body: any) => boolean} [check] whether a 200 response has the right content
 */

/**
 * @param {ReturnType<typeof import("./clients.mjs").restClient>} api
 * @param {Kind[]} kinds
 * @param {number} rounds
 */
export async function measureRest(api, kinds, rounds) {
  const stats = kinds.map(() => ({ h: histogram(), roundTrips: /** @type {Set<number>} */ (new Set()), wrong: 0 }));
  for (let r = -10; r < rounds; r++) {
    for (let k = 0; k < kinds.length; k++) {
      const kind = /** @type {Kind} */ (kinds[k]);
      const res = await api("GET", kind.path, kind.user);
      if (r < 0) continue;
      const stat = /** @type {(typeof stats)[number]} */ (stats[k]);
      if (res.status !== 200 || (kind.check && !kind.check(res.body))) stat.wrong++;
      stat.h.recordValue(Math.round(res.ms * 1000));
      stat.roundTrips.add(Number(res.headers.get("x-bench-d1-round-trips") ?? 0));
    }
  }
  return stats.map((stat) => ({
    latencyMs: percentiles(stat.h),
    d1RoundTrips: [...stat.roundTrips].sort(),
    wrongResponses: stat.wrong,
  }));
}
