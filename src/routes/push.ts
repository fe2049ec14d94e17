import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { isPushService, readPushConfig } from "../push/config";
import { isP256PublicKey } from "../push/keys";
import { deleteSubscription, saveSubscription } from "../push/store";
import { PushSubscriptionBody, PushUnsubscribeBody } from "../schemas";
import { database } from "./conversations";
import { bearer, error, jsonBody } from "./openapi";

const errors = {
  400: error("validation_failed"),
  401: error("unauthenticated"),
  413: error("payload_too_large"),
};

export function pushRoutes(app: OpenAPIHono<AppEnv>): void {
  const subscribe = createRoute({
    method: "put",
    path: "/v1/push/subscriptions",
    operationId: "savePushSubscription",
    tags: ["Push"],
    summary: "Store the caller's Web Push subscription (the same endpoint again replaces its keys)",
    security: bearer,
    request: { body: jsonBody(PushSubscriptionBody) },
    responses: { 201: { description: "Stored for the caller" }, ...errors },
  });
  app.openapi(subscribe, async (c) => {
    const { endpoint, keys } = c.req.valid("json");
    if (!isPushService(readPushConfig(c.env), endpoint)) {
      throw new ApiError("validation_failed", "The request is not valid", [
        { path: "endpoint", message: "must be an endpoint of a known push service (PUSH_SERVICE_HOSTS)" },
      ]);
    }
    if (!(await isP256PublicKey(keys.p256dh))) {
      throw new ApiError("validation_failed", "The request is not valid", [
        { path: "keys.p256dh", message: "must be a point on P-256" },
      ]);
    }
    await saveSubscription(
      database(c.env),
      { endpoint, userId: c.get("userId"), p256dh: keys.p256dh, auth: keys.auth },
      Date.now(),
    );
    return c.body(null, 201);
  });

  const unsubscribe = createRoute({
    method: "delete",
    path: "/v1/push/subscriptions",
    operationId: "deletePushSubscription",
    tags: ["Push"],
    summary: "Delete the caller's subscription with this endpoint (nothing happens to anyone else's)",
    security: bearer,
    request: { body: jsonBody(PushUnsubscribeBody) },
    responses: { 204: { description: "The caller has no subscription with this endpoint any more" }, ...errors },
  });
  app.openapi(unsubscribe, async (c) => {
    await deleteSubscription(database(c.env), c.get("userId"), c.req.valid("json").endpoint);
    return c.body(null, 204);
  });
}
