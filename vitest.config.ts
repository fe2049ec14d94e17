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
          // Whatever a developer's .dev.vars says, the tests run as production does: no dev token endpoint.
          DEV_AUTH: "",
          // Long property runs (scripts/test-long.mjs): a seed and a run count; empty means the fixed CI ones.
          PROPERTY_SEED: process.env.PROPERTY_SEED ?? "",
          PROPERTY_RUNS: process.env.PROPERTY_RUNS ?? "",
          // Push notifications (test/push*.test.ts): a test-only VAPID key pair, a webhook, and no delay.
          VAPID_PUBLIC_KEY: "BHm86u_uVUOXHt3FXwdJr-hWWG7nNUamphGAucwwimNUiMA--Or4PU_vFsGCzBmA2g6xPCHo-NI6lSCeGNx3nh0",
          VAPID_PRIVATE_KEY: "6w_G-6ILO2v-pEeiNCKwEaJLJ56cDl4aNOLr_UWLNIA",
          VAPID_SUBJECT: "mailto:push-tests@example.com",
          PUSH_WEBHOOK_URL: "https://webhook.push.test/notify",
          PUSH_WEBHOOK_SECRET: "test-webhook-secret",
          PUSH_DELAY_SECONDS: "0",
          // The tests' push services are hosts under push.test (the default list names the browsers' own).
          PUSH_SERVICE_HOSTS: "push.test",
        },
        // No request leaves a test: the push services and the webhook of the tests answer here (a test may
        // intercept them first with a fetch spy); anything else gets a 502.
        outboundService: (request: Request) =>
          new URL(request.url).hostname.endsWith(".push.test")
            ? new Response(null, { status: 201 })
            : new Response("no network in tests", { status: 502 }),
      },
    }),
  ],
  test: {
    setupFiles: ["./test/setup.ts"],
    // These machines are shared and noisy: a test fails on what it asserts, not on a slow moment.
    testTimeout: 20_000,
  },
}));
