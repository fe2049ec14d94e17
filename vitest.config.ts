import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig(async () => ({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          TEST_MIGRATIONS: await readD1Migrations("./migrations"),
          AUTH_SECRET: "test-secret-that-is-long-enough-for-hs256",
        },
      },
    }),
  ],
  test: {
    setupFiles: ["./test/setup.ts"],
    // These machines are shared and noisy: a test fails on what it asserts, not on a slow moment.
    testTimeout: 20_000,
  },
}));
