import type { OpenAPIHono } from "@hono/zod-openapi";
import { createApp } from "./app";
import { type AppEnv, type Env, readLimits } from "./env";
import { handlePushBatch } from "./push/consumer";

export { UserInbox } from "./inbox/inbox";
export { ConversationRoom } from "./room/room";

// The limits come from `[vars]`, which are fixed for the life of an isolate: build the app once.
let app: OpenAPIHono<AppEnv> | undefined;

export default {
  fetch(request, env, ctx) {
    app ??= createApp(readLimits(env));
    return app.fetch(request, env, ctx);
  },
  queue(batch, env) {
    return handlePushBatch(batch, env);
  },
} satisfies ExportedHandler<Env>;
