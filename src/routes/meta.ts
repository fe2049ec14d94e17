import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../env";
import { json } from "./openapi";

export function metaRoutes(app: OpenAPIHono<AppEnv>): void {
  const health = createRoute({
    method: "get",
    path: "/health",
    summary: "Liveness; no authentication",
    responses: { 200: json(z.object({ ok: z.literal(true), version: z.string() }), "The service is up") },
  });
  app.openapi(health, (c) => c.json({ ok: true as const, version: c.env.APP_VERSION ?? "dev" }, 200));

  app.doc31("/openapi.json", (c) => ({
    openapi: "3.1.0",
    info: {
      title: "Edge chat API",
      version: c.env.APP_VERSION ?? "dev",
      description: "Ordered, durable, idempotent, resumable chat on Cloudflare Workers.",
    },
  }));
}
