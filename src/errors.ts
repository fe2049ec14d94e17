import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ZodError } from "zod";

/** The error catalogue of the API contract: one stable code for each kind of failure. */
export const ERROR_STATUS = {
  validation_failed: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  idempotency_conflict: 409,
  payload_too_large: 413,
  upgrade_required: 426,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

/** The one error type: every failure a client may see is an ApiError by the time it leaves. */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
    /** Seconds, for `Retry-After` (429 and 503; rounded up there) and `retryAfterMs` of error frames. */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiError";
    this.status = ERROR_STATUS[code];
  }

  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    };
  }
}

export const notFound = () => new ApiError("not_found", "Not found");

export function validationFailed(error: ZodError, prefix: string[] = []): ApiError {
  // An unknown field is reported on the object that has it: name each field instead.
  const details = error.issues.flatMap((issue) => {
    const at = [...prefix, ...issue.path.map(String)];
    return issue.code === "unrecognized_keys"
      ? issue.keys.map((key) => ({ path: [...at, key].join("."), message: "unknown field" }))
      : [{ path: at.join("."), message: issue.message }];
  });
  return new ApiError("validation_failed", "The request is not valid", details);
}

/** Turns anything thrown into an ApiError, hiding the text of errors we did not make. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HTTPException) {
    // Hono's own failures: malformed JSON (400) and an unsupported Content-Type (415).
    if (err.status === 400 || err.status === 415) {
      return new ApiError("validation_failed", err.status === 415 ? "The body must be JSON" : "Malformed JSON");
    }
    if (err.status === 413) return new ApiError("payload_too_large", "The body is too large");
    if (err.status === 401) return new ApiError("unauthenticated", "Authentication required");
  }
  if (isStorageUnavailable(err)) {
    return new ApiError("unavailable", "Storage is unavailable; nothing was stored, retry later", undefined, 1);
  }
  return new ApiError("internal", "Internal error");
}

/** Failures of the platform that a retry can outlive, as D1 words them (its documented retryable errors). */
const TRANSIENT_STORAGE_FAILURES = [
  "Network connection lost",
  "storage caused object to be reset",
  "reset because its code was updated",
  "overloaded",
  "transient issue",
  "exceeded timeout",
];

/** A D1 failure of the platform (lost connection, overload, reset), as opposed to a query that is wrong. */
export function isStorageUnavailable(err: unknown): boolean {
  const text = `${err instanceof Error ? err.message : ""} ${
    err instanceof Error && err.cause instanceof Error ? err.cause.message : ""
  }`;
  return TRANSIENT_STORAGE_FAILURES.some((words) => text.includes(words));
}

/** The response for anything thrown: the error body, its status, and `Retry-After` where it applies. */
export function errorResponse(err: unknown): Response {
  const apiError = toApiError(err);
  if (apiError.code === "internal") console.error("unhandled error", err);
  return errorJson(apiError);
}

export function errorJson(error: ApiError): Response {
  const headers: Record<string, string> = {};
  if (error.retryAfter !== undefined) headers["Retry-After"] = String(Math.ceil(error.retryAfter));
  return Response.json(error.toBody(), { status: error.status, headers });
}
