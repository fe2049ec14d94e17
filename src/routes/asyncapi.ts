import { getOpenApiMetadata } from "@asteasolutions/zod-to-openapi";
import { z } from "@hono/zod-openapi";
import type { Limits } from "../env";
import {
  Conversation,
  InboxConnect,
  InboxFrameSchema,
  LastMessage,
  Message,
  messageSchemasFor,
  Participant,
  ServerFrameSchema,
} from "../schemas";

// The AsyncAPI 3.0 document of both sockets, generated from the zod schemas the server uses (as /openapi.json
// is), so that a frame added to a union is documented by that change alone.

type JsonSchema = Record<string, unknown>;
type Direction = "client" | "server";
/** A discriminated union of frames: objects whose `type` is a literal. */
type Frames = { readonly options: readonly z.ZodObject[] };

interface Socket {
  /** The channel's key; with a frame's direction and type it names that frame's message and schema. */
  name: "conversation" | "inbox";
  address: string;
  title: string;
  description: string;
  parameters: Record<string, { description: string }>;
  /** The query of the upgrade, as its route parses it. */
  query: z.ZodType;
  /** What the client may send besides `ping` (the inbox takes nothing else). */
  clientFrames: Frames | null;
  serverFrames: Frames;
}

/** The schemas the frames share, under the names /openapi.json gives them. */
const shared = { Message, Participant, Conversation, LastMessage };

// `ping` is answered `pong` by the runtime itself, without waking the socket's Durable Object.
const Ping = z.literal("ping").describe("Keeps the socket open; answered `pong` without waking the server");
const Pong = z.literal("pong").describe("The answer to `ping`");

const CLOSE_CODES =
  "Close codes: 1000 normal (also after 2 minutes without a frame or a ping), 1003 binary frame, 1009 frame " +
  "over the limit, 1012 the service restarts or catching up failed (reconnect), 4403 removed from the " +
  "conversation, 4429 closed for abuse after repeated rate-limit violations.";

function sockets(limits: Limits): Socket[] {
  const { connect, clientFrame } = messageSchemasFor(limits);
  return [
    {
      name: "conversation",
      address: "/v1/conversations/{id}/ws",
      title: "A conversation's socket",
      description:
        "One conversation, message by message. The first frame is `ready`; with `?since=S` every message with " +
        `seq > S follows, ascending (or \`resync\` when more than ${limits.replay} were missed), then live frames. ` +
        CLOSE_CODES,
      parameters: { id: { description: "The conversation's id" } },
      query: connect,
      clientFrames: clientFrame,
      serverFrames: ServerFrameSchema,
    },
    {
      name: "inbox",
      address: "/v1/inbox/ws",
      title: "The caller's inbox socket",
      description:
        "The caller's conversation list, live, over one socket whatever the number of conversations. The first " +
        "frame is `inbox_ready`; with `?since=V` the latest state of every conversation changed after version V " +
        "follows (or `resync`), then live frames. The client sends only `ping`.",
      parameters: {},
      query: InboxConnect,
      clientFrames: null,
      serverFrames: InboxFrameSchema,
    },
  ];
}

function frameType(frame: z.ZodObject): string {
  const type = frame.shape.type;
  if (!(type instanceof z.ZodLiteral) || typeof type.value !== "string") {
    throw new Error("A frame is an object whose type is one string literal");
  }
  return type.value;
}

const pascal = (...words: string[]) =>
  words
    .flatMap((w) => w.split("_"))
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join("");

/** One message of a channel: a frame of one direction and type, its payload a schema of `components`. */
interface FrameMessage {
  key: string;
  /** The frame's `type`; `ping` and `pong` are plain text. */
  type: string;
  direction: Direction;
  schemaId: string;
  schema: z.ZodType;
  contentType: string;
}

function framesOf(socket: Socket): FrameMessage[] {
  const json = (direction: Direction, frames: Frames | null): FrameMessage[] =>
    (frames?.options ?? []).map((schema) => {
      const type = frameType(schema);
      return {
        key: `${direction}.${type}`,
        type,
        direction,
        schemaId: pascal(socket.name, direction, type),
        schema,
        contentType: "application/json",
      };
    });
  const text = (direction: Direction, schemaId: string, schema: z.ZodType): FrameMessage => ({
    key: `${direction}.${schemaId.toLowerCase()}`,
    type: schemaId.toLowerCase(),
    direction,
    schemaId,
    schema,
    contentType: "text/plain",
  });
  return [
    ...json("client", socket.clientFrames),
    text("client", "Ping", Ping),
    ...json("server", socket.serverFrames),
    text("server", "Pong", Pong),
  ];
}

// zod-to-openapi keeps `.openapi({...})` metadata (formats, examples, limits enforced by refinements) in a
// registry of its own, which z.toJSONSchema does not read: copy it over. Wrappers (optional, nullable…) are
// skipped, as their inner schema carries the same metadata and is emitted too.
const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "readonly", "nonoptional", "pipe"]);

function withOpenApiMetadata(ctx: { zodSchema: z.core.$ZodTypes; jsonSchema: JsonSchema }): void {
  if (WRAPPERS.has(ctx.zodSchema._zod.def.type)) return;
  // Every schema here is made with zod's classic API, whose types the core type does not name.
  const zodSchema = ctx.zodSchema as unknown as z.ZodType;
  const { param: _param, example, ...metadata } = getOpenApiMetadata(zodSchema);
  Object.assign(ctx.jsonSchema, metadata);
  // draft-07, which AsyncAPI schemas extend, has `examples` (a list) and no `example`.
  if (example !== undefined) ctx.jsonSchema.examples = [example];
}

/** JSON Schema (draft-07) of every named schema, referring to each other under #/components/schemas. */
function componentSchemas(named: Map<string, z.ZodType>): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of named) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    target: "draft-07",
    // The wire form, as a client meets it: zod closes plain objects (additionalProperties: false) only in its
    // output form, and a client must accept fields added to server frames later.
    io: "input",
    uri: (id) => `#/components/schemas/${id}`,
    override: withOpenApiMetadata,
  });
  // Each comes with `$schema` and an `$id` equal to its reference: AsyncAPI names them by their key instead.
  return Object.fromEntries(
    Object.entries(schemas).map(([id, { $schema: _s, $id: _i, ...schema }]) => [id, schema as JsonSchema]),
  );
}

const ref = (path: string) => ({ $ref: path });

function channelOf(socket: Socket, frames: FrameMessage[]) {
  const messages = Object.fromEntries(
    frames.map((frame) => [
      frame.key,
      {
        name: frame.key,
        title: `${frame.type} (${frame.direction === "client" ? "client → server" : "server → client"})`,
        contentType: frame.contentType,
        payload: ref(`#/components/schemas/${frame.schemaId}`),
        ...(frame.schema.description ? { summary: frame.schema.description } : {}),
      },
    ]),
  );
  const query = z.toJSONSchema(socket.query, { target: "draft-07", io: "input" });
  delete query.$schema;
  return {
    address: socket.address,
    title: socket.title,
    description: socket.description,
    ...(Object.keys(socket.parameters).length > 0 ? { parameters: socket.parameters } : {}),
    messages,
    servers: [ref("#/servers/api")],
    bindings: { ws: { method: "GET", query, bindingVersion: "0.1.0" } },
  };
}

function operationsOf(socket: Socket, frames: FrameMessage[]) {
  const of = (direction: Direction) =>
    frames.filter((f) => f.direction === direction).map((f) => ref(`#/channels/${socket.name}/messages/${f.key}`));
  const channel = ref(`#/channels/${socket.name}`);
  const name = pascal(socket.name);
  return {
    [`send${name}Frame`]: {
      action: "send",
      channel,
      summary: socket.clientFrames ? "A frame from the client" : "The client sends only ping",
      messages: of("client"),
    },
    [`receive${name}Frame`]: {
      action: "receive",
      channel,
      summary: "A frame from the server",
      messages: of("server"),
    },
  };
}

export interface AsyncApiServer {
  host: string;
  protocol: "ws" | "wss";
}

/** The channels, operations and components of the limits in force: the part of the document that is fixed. */
function socketsDocument(limits: Limits) {
  const named = new Map<string, z.ZodType>(Object.entries(shared));
  named.set("Ping", Ping).set("Pong", Pong);
  const channels: Record<string, unknown> = {};
  let operations: Record<string, unknown> = {};
  for (const socket of sockets(limits)) {
    const frames = framesOf(socket);
    for (const frame of frames) named.set(frame.schemaId, frame.schema);
    channels[socket.name] = channelOf(socket, frames);
    operations = { ...operations, ...operationsOf(socket, frames) };
  }
  return { channels, operations, schemas: componentSchemas(named) };
}

const byLimits = new Map<string, ReturnType<typeof socketsDocument>>();

/** The AsyncAPI 3.0 document of both sockets, as served by `server`. */
export function asyncApiDocument(limits: Limits, version: string, server: AsyncApiServer) {
  const key = JSON.stringify(limits);
  let fixed = byLimits.get(key);
  if (!fixed) {
    fixed = socketsDocument(limits);
    byLimits.set(key, fixed);
  }
  return {
    asyncapi: "3.0.0",
    info: {
      title: "Edge chat sockets",
      version,
      description:
        "The two WebSockets of the chat API: text frames, one JSON object each, with a `type`; the literal text " +
        "`ping` is answered `pong`. Operations are the client's: `send` is client → server, `receive` is server " +
        "→ client. The upgrades themselves (`GET` with their tickets, errors and 101) are in /openapi.json.",
    },
    defaultContentType: "application/json",
    servers: {
      api: {
        host: server.host,
        protocol: server.protocol,
        description: "The deployment serving this document",
        security: [ref("#/components/securitySchemes/bearer"), ref("#/components/securitySchemes/ticket")],
      },
    },
    channels: fixed.channels,
    operations: fixed.operations,
    components: {
      schemas: fixed.schemas,
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "The Authorization header, for clients that can send headers",
        },
        ticket: {
          type: "httpApiKey",
          in: "query",
          name: "ticket",
          description: "A single-use ticket of POST /v1/conversations/{id}/ticket or POST /v1/inbox/ticket",
        },
      },
    },
  };
}
