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
export const bearer = [{ Bearer: [] }];
