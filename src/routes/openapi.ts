import { z } from "@hono/zod-openapi";
import type { ZodType } from "zod";
import { ErrorBody } from "../schemas";

// Small builders for route documentation, so each route states only what is its own.

export const json = <T extends ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

export const jsonBody = <T extends ZodType>(schema: T) => ({
  content: { "application/json": { schema } },
  required: true as const,
});

export const error = (description: string) => json(ErrorBody, description);

/** The failures every authenticated conversation route can answer with. */
export const commonErrors = {
  400: error("validation_failed"),
  401: error("unauthenticated"),
  404: error("not_found: no such conversation, or the caller is not a participant"),
  413: error("payload_too_large"),
};

export const forbidden = { 403: error("forbidden") };
/** A write within one of the user's buckets (sends; read markers and typing; new conversations; participant changes). */
export const rateLimited = { 429: error("rate_limited: over this user's limit; Retry-After says when to come back") };
export const bearer = [{ Bearer: [] }];
type Security = { [scheme: string]: string[] }[];
/** No authentication: lifts the document-wide Bearer requirement. */
export const noAuth: Security = [];
/** A WebSocket upgrade: the Authorization header, or a single-use ticket in the query (browsers send no headers). */
export const bearerOrTicket: Security = [{ Bearer: [] }, { Ticket: [] }];

/** What a WebSocket upgrade route answers; the frames that follow the 101 are in /asyncapi.json. */
export const upgradeResponses = (socket: string) => ({
  101: {
    description: `Switching Protocols: the ${socket} socket is open; its frames are described in /asyncapi.json`,
    headers: z.object({ Upgrade: z.literal("websocket"), Connection: z.literal("Upgrade") }),
  },
  400: error("validation_failed: the query is not valid"),
  401: error("unauthenticated: no valid token, or the ticket is unknown, used or expired"),
  403: error("forbidden: this Origin is not allowed"),
  426: error("upgrade_required: the request is no WebSocket upgrade"),
  429: error("rate_limited: the user has as many of these sockets open as allowed; Retry-After"),
});
