import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { except } from "hono/combine";
import type { AppEnv, Limits } from "./env";
import { ApiError, errorResponse, notFound, validationFailed } from "./errors";
import { requireUser } from "./middleware/auth";
import { corsForOrigins } from "./middleware/origins";
import { conversationRoutes } from "./routes/conversations";
import { devRoutes } from "./routes/dev";
import { inboxRoutes } from "./routes/inbox";
import { isTicketConnect, messageRoutes } from "./routes/messages";
import { metaRoutes } from "./routes/meta";
import { pushRoutes } from "./routes/push";

/** The Worker's HTTP application for the given limits. */
export function createApp(limits: Limits): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationFailed(result.error);
    },
  });

  app.use("*", corsForOrigins);
  app.use("/v1/*", async (c, next) => {
    c.set("limits", limits);
    await next();
  });
  app.use(
    "/v1/*",
    bodyLimit({
      maxSize: limits.bodyBytes,
      onError: () => {
        throw new ApiError("payload_too_large", `The body is over ${limits.bodyBytes} bytes`);
      },
    }),
  );
  // The WebSocket routes may authenticate with a single-use ticket instead, which it redeems itself.
  app.use(
    "/v1/*",
    except((c) => isTicketConnect(c.req.path, c.req.query("ticket")), requireUser),
  );

  metaRoutes(app, limits);
  devRoutes(app); // answers only when DEV_AUTH is set (.dev.vars); 404 otherwise
  conversationRoutes(app, limits);
  messageRoutes(app, limits);
  inboxRoutes(app);
  pushRoutes(app);

  app.notFound(() => {
    throw notFound();
  });
  app.onError((err) => errorResponse(err));
  return app;
}
