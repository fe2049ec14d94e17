import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../src/env";
import { InboxFrameSchema, messageSchemasFor, ServerFrameSchema } from "../src/schemas";
import { call } from "./helpers";

// The documents tools read: /openapi.json for REST and the upgrades, /asyncapi.json for the frames. The lint of
// both (scripts/lint-api.mjs) takes them from the export test below, through vitest's JSON report.

interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string }[];
  responses: Record<string, unknown>;
}
interface OpenApi {
  security?: Record<string, string[]>[];
  tags?: { name: string; description?: string }[];
  servers?: { url: string }[];
  paths: Record<string, Record<string, Operation>>;
}
interface AsyncApi {
  asyncapi: string;
  channels: Record<string, { address: string; messages: Record<string, unknown>; bindings: unknown }>;
  operations: Record<string, { action: string; messages: { $ref: string }[] }>;
}

const get = async <T>(path: string): Promise<T> => {
  const res = await call(path);
  expect(res.status).toBe(200);
  return (await res.json()) as T;
};

const operations = (doc: OpenApi) =>
  Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ where: `${method} ${path}`, ...operation })),
  );

const typesOf = (frames: { options: readonly { shape: { type: { value: unknown } } }[] }) =>
  frames.options.map((frame) => String(frame.shape.type.value));

/** Every `$ref` of a document, to check that each points at something in it. */
function refsOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(refsOf);
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([key, inner]) =>
    key === "$ref" && typeof inner === "string" ? [inner] : refsOf(inner),
  );
}

function resolves(doc: unknown, ref: string): boolean {
  if (!ref.startsWith("#/")) return false;
  let at: unknown = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (at === null || typeof at !== "object" || !(key in at)) return false;
    at = (at as Record<string, unknown>)[key];
  }
  return true;
}

describe("API documents", () => {
  it("exports both documents for scripts/lint-api.mjs", async ({ task }) => {
    const openapi = await get<OpenApi>("/openapi.json");
    const asyncapi = await get<AsyncApi>("/asyncapi.json");
    Object.assign(task.meta, { apiDocuments: { openapi, asyncapi } });
  });

  it("names every operation with a unique camelCase operationId, and tags it with a described tag", async () => {
    const doc = await get<OpenApi>("/openapi.json");
    const ops = operations(doc);
    const ids = ops.map((op) => op.operationId);
    expect(ids.every((id) => id !== undefined && /^[a-z][A-Za-z]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    const described = new Set(doc.tags?.filter((t) => t.description).map((t) => t.name));
    for (const op of ops) expect(op.tags?.length === 1 && described.has(op.tags[0] ?? ""), op.where).toBe(true);
    expect(doc.servers).toEqual([expect.objectContaining({ url: "/" })]);
  });

  it("asks for a Bearer token everywhere but /health, and states its failures", async () => {
    const doc = await get<OpenApi>("/openapi.json");
    expect(doc.security).toEqual([{ Bearer: [] }]);
    for (const op of operations(doc)) {
      const codes = Object.keys(op.responses);
      if (op.where === "get /health") {
        expect(op.security).toEqual([]);
        continue;
      }
      // What the lint's operation-2xx/4xx-response rules would check, turned off for the upgrades' 101 and /health.
      expect(
        op.security?.some((s) => "Bearer" in s),
        op.where,
      ).toBe(true);
      expect(
        codes.some((c) => /^(2\d\d|101)$/.test(c)),
        op.where,
      ).toBe(true);
      expect(
        codes.some((c) => /^4\d\d$/.test(c)),
        op.where,
      ).toBe(true);
    }
  });

  it("describes both WebSocket upgrades: 101, a ticket or a token, since, and 426 without an upgrade", async () => {
    const doc = await get<OpenApi>("/openapi.json");
    for (const path of ["/v1/conversations/{id}/ws", "/v1/inbox/ws"]) {
      const op = doc.paths[path]?.get;
      expect(op, path).toBeDefined();
      expect(Object.keys(op?.responses ?? {})).toEqual(expect.arrayContaining(["101", "401", "403", "426", "429"]));
      expect(op?.security).toEqual([{ Bearer: [] }, { Ticket: [] }]);
      expect(op?.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: "since", in: "query" })]));
    }
  });

  it("lists every frame type of the schemas' unions in the AsyncAPI document", async () => {
    const doc = await get<AsyncApi>("/asyncapi.json");
    expect(doc.asyncapi).toBe("3.0.0");
    const messages = (channel: string) => Object.keys(doc.channels[channel]?.messages ?? {});
    const clientFrames = typesOf(messageSchemasFor(DEFAULT_LIMITS).clientFrame).map((t) => `client.${t}`);
    const serverFrames = typesOf(ServerFrameSchema).map((t) => `server.${t}`);
    const inboxFrames = typesOf(InboxFrameSchema).map((t) => `server.${t}`);
    expect(messages("conversation").sort()).toEqual(
      [...clientFrames, ...serverFrames, "client.ping", "server.pong"].sort(),
    );
    expect(messages("inbox").sort()).toEqual([...inboxFrames, "client.ping", "server.pong"].sort());
    const sent = Object.values(doc.operations).filter((op) => op.action === "send");
    expect(sent.flatMap((op) => op.messages.map((m) => m.$ref.split("/").at(-1))).sort()).toEqual(
      [...clientFrames, "client.ping", "client.ping"].sort(),
    );
  });

  it("has no reference to anything it does not define", async () => {
    for (const path of ["/openapi.json", "/asyncapi.json"]) {
      const doc = await get<unknown>(path);
      const dangling = refsOf(doc).filter((ref) => !resolves(doc, ref));
      expect(dangling, path).toEqual([]);
    }
  });
});
