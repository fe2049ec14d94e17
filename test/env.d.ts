import type { D1Migration } from "@cloudflare/vitest-plugin";

// The tests' own bindings (vitest.config.ts), on top of the Worker's (src/env.ts).
declare global {
  namespace Cloudflare {
    interface Env {
      TEST_MIGRATIONS: D1Migration[];
      /** Set by scripts/test-long.mjs; empty in CI, where the property tests use their fixed seeds. */
      PROPERTY_SEED: string;
      PROPERTY_RUNS: string;
    }
  }
}
