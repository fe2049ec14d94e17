import { createMiddleware } from "hono/factory";
import { authConfig, bearerToken, verifyToken } from "../auth";
import type { AppEnv } from "../env";

/** Requires a valid bearer token and puts its subject in `userId`. */
export const requireUser = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerToken(c.req.header("Authorization"));
  c.set("userId", await verifyToken(token, authConfig(c.env)));
  await next();
});
