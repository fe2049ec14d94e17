import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv, Limits } from "../env";
import { asyncApiDocument } from "./asyncapi";
import { bearer, json, noAuth } from "./openapi";

/** The tags of /openapi.json, in reading order; every operation has one of them. */
const TAGS = [
  { name: "Conversations", description: "Creating, listing and reading conversations; their participants" },
  { name: "Messages", description: "History, sending, editing, deleting; read markers and typing over REST" },
  {
    name: "Sockets",
    description: "Tickets and the WebSocket upgrades of a conversation and of the inbox; frames in /asyncapi.json",
  },
  { name: "Inbox", description: "The caller's unread totals over all their conversations" },
  { name: "Push", description: "Web Push subscriptions of the caller" },
  { name: "Service", description: "Liveness, without authentication" },
];

function registerSecuritySchemes(app: OpenAPIHono<AppEnv>): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "Bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "Ticket", {
    type: "apiKey",
    in: "query",
    name: "ticket",
    description:
      "A single-use ticket for one WebSocket upgrade, from POST /v1/conversations/{id}/ticket or " +
      "POST /v1/inbox/ticket: browsers cannot send an Authorization header with a WebSocket",
  });
}

/** `/health` and the two documents of the API, all without authentication. */
export function metaRoutes(app: OpenAPIHono<AppEnv>, limits: Limits): void {
  const health = createRoute({
    method: "get",
    path: "/health",
    operationId: "getHealth",
    tags: ["Service"],
    summary: "Liveness; no authentication",
    security: noAuth,
    responses: { 200: json(z.object({ ok: z.literal(true), version: z.string() }), "The service is up") },
  });
  app.openapi(health, (c) => c.json({ ok: true as const, version: c.env.APP_VERSION ?? "dev" }, 200));

  registerSecuritySchemes(app);
  app.doc31("/openapi.json", (c) => ({
    openapi: "3.1.0",
    info: {
      title: "Edge chat API",
      version: c.env.APP_VERSION ?? "dev",
      description:
        "Ordered, durable, idempotent, resumable chat on Cloudflare Workers. The frames of the two WebSockets " +
        "are described by the AsyncAPI 3.0 document at /asyncapi.json.",
    },
    // Relative: the document is served by the deployment it describes, whatever its host.
    servers: [{ url: "/", description: "The deployment serving this document" }],
    security: bearer,
    tags: TAGS,
  }));

  app.get("/asyncapi.json", (c) => {
    const url = new URL(c.req.url);
    const server = { host: url.host, protocol: url.protocol === "http:" ? "ws" : "wss" } as const;
    return c.json(asyncApiDocument(limits, c.env.APP_VERSION ?? "dev", server));
  });
}
