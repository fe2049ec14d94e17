import { env } from "cloudflare:workers";

/** Command sequences of the model test in a CI run; `--runs M` of a long run is counted in the same unit. */
export const MODEL_CI_RUNS = 40;

/**
 * The seed and run count of a property: fixed in CI (so that a run is reproducible), or the ones that
 * scripts/test-long.mjs passes for a long run: a random seed, and `--runs M` model sequences, every other
 * property scaled by the same factor.
 */
export function propertyRuns(ciSeed: number, ciRuns: number): { seed: number; numRuns: number } {
  const seed = env.PROPERTY_SEED ? Number(env.PROPERTY_SEED) : ciSeed;
  const runs = env.PROPERTY_RUNS ? Number(env.PROPERTY_RUNS) : 0;
  const scale = runs > 0 ? runs / MODEL_CI_RUNS : 1;
  return { seed, numRuns: Math.max(1, Math.round(ciRuns * scale)) };
}

/** Prints the figures of a run on one line, for scripts/test-long.mjs and the README. */
export function reportFigures(name: string, figures: Record<string, number>): void {
  console.log(`SUITE-FIGURES ${JSON.stringify({ name, ...figures })}`);
}
