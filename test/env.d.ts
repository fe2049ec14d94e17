import type { D1Migration } from "@cloudflare/vitest-plugin";
import type { Env as AppBindings } from "../src/env";

declare global {
  namespace Cloudflare {
    interface Env extends AppBindings {
      TEST_MIGRATIONS: D1Migration[];
      /** Set by scripts/test-long.mjs; empty in CI, where the property tests use their fixed seeds. */
      PROPERTY_SEED: string;
      PROPERTY_RUNS: string;
    }
    interface GlobalProps {
      mainModule: typeof import("../src/index");
      durableNamespaces: "ConversationRoom";
    }
  }
}
