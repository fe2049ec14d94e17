import { describe, expect, it } from "vitest";
import { call } from "./helpers";

describe("health and OpenAPI", () => {
  it("answers /health without authentication", async () => {
    const res = await call("/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, version: "0.1.0" });
  });

  it("serves an OpenAPI 3.1 document of every route", async () => {
    const res = await call("/openapi.json");
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths["/v1/conversations"] ?? {}).sort()).toEqual(["get", "post"]);
    expect(doc.paths["/v1/conversations/{id}/participants/{userId}"]).toHaveProperty("delete");
  });
});
