import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { type Env, readLimits } from "../src/env";
import { isOriginAllowed } from "../src/middleware/origins";
import { call, createConversation, expectError, inRoomSql, tokenFor, uniqueUser } from "./helpers";
import { connect, upgrade } from "./socket";

interface Ticket {
  ticket: string;
  expiresAt: string;
}

const ticketPath = (id: string) => `/v1/conversations/${id}/ticket`;

async function issueTicket(conversationId: string, as: string): Promise<Ticket> {
  const res = await call(ticketPath(conversationId), { method: "POST", as });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as Ticket;
}

/** Two users in a fresh conversation. */
async function pair() {
  const alice = uniqueUser("alice");
  const bob = uniqueUser("bob");
  const conv = await createConversation(alice, [bob]);
  return { alice, bob, conv };
}

/** The body a conversation that does not exist answers with; a non-participant must get the very same. */
async function missingConversationBody(as: string, path = (id: string) => `/v1/conversations/${id}/ws`) {
  const res = await call(path("no-such-conversation"), { as, headers: { Upgrade: "websocket" } });
  expect(res.status).toBe(404);
  return res.text();
}

describe("tickets", () => {
  it("issues a ticket with 201 {ticket, expiresAt} valid for at most 60 s", async () => {
    const { alice, conv } = await pair();
    const before = Date.now();
    const issued = await issueTicket(conv.id, alice);
    expect(Object.keys(issued).sort()).toEqual(["expiresAt", "ticket"]);
    expect(issued.ticket).toEqual(expect.any(String));
    expect(issued.ticket.length).toBeGreaterThanOrEqual(16);
    expect(issued.expiresAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    const expiresAt = Date.parse(issued.expiresAt);
    expect(expiresAt).toBeGreaterThan(before);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 60_000);
    // Two tickets are two different secrets.
    expect((await issueTicket(conv.id, alice)).ticket).not.toBe(issued.ticket);
  });

  it("connects with ?ticket= and no Authorization header as the ticket's user", async () => {
    const { alice, bob, conv } = await pair();
    const { ticket } = await issueTicket(conv.id, bob);
    const b = await connect(conv.id, null, { ticket });
    expect(b.frames[0]).toMatchObject({ type: "ready", conversationId: conv.id, userId: bob });
    // The socket is really bob's: what alice sends reaches it as someone else's message.
    const sent = await call(`/v1/conversations/${conv.id}/messages`, {
      method: "POST",
      as: alice,
      body: { content: "hi bob" },
    });
    expect(sent.status).toBe(201);
    expect((await b.next("message")).message).toMatchObject({ senderId: alice, content: "hi bob" });
    b.close();
  });

  it("works once: the same ticket again is 401 unauthenticated", async () => {
    const { alice, conv } = await pair();
    const { ticket } = await issueTicket(conv.id, alice);
    const first = await connect(conv.id, null, { ticket });
    await expectError(await upgrade(conv.id, null, { ticket }), 401, "unauthenticated");
    first.close();
    // Still refused once the socket it opened is closed.
    await first.waitClosed();
    await expectError(await upgrade(conv.id, null, { ticket }), 401, "unauthenticated");
  });

  it("is bound to its conversation: a ticket of A used on B is 401", async () => {
    const { alice, bob, conv: a } = await pair();
    const b = await createConversation(alice, [bob]);
    const { ticket } = await issueTicket(a.id, alice);
    await expectError(await upgrade(b.id, null, { ticket }), 401, "unauthenticated");
  });

  it("refuses an unknown ticket with 401", async () => {
    const { conv } = await pair();
    await expectError(await upgrade(conv.id, null, { ticket: "not-a-ticket" }), 401, "unauthenticated");
    await expectError(await upgrade(conv.id, null, { ticket: "" }), 401, "unauthenticated");
  });

  it("refuses the ticket of a user removed after it was issued with 404, as for a stranger", async () => {
    const { alice, bob, conv } = await pair();
    const { ticket } = await issueTicket(conv.id, bob);
    const removed = await call(`/v1/conversations/${conv.id}/participants/${bob}`, { method: "DELETE", as: alice });
    expect(removed.status).toBe(204);
    const res = await upgrade(conv.id, null, { ticket });
    expect(res.status).toBe(404);
    expect(await res.text()).toBe(await missingConversationBody(bob));
  });

  it("refuses an expired ticket with 401", async () => {
    const { alice, conv } = await pair();
    const { ticket } = await issueTicket(conv.id, alice);
    // The room keeps its tickets' secrets (the part before the Worker's signature) in its own SQLite: make
    // this one expire a moment ago.
    const secret = ticket.split(".")[0];
    const stored = await inRoomSql(conv.id, (sql) =>
      sql
        .exec(
          "UPDATE tickets SET expires_at = ? WHERE ticket = ? RETURNING user_id AS userId, expires_at AS expiresAt",
          Date.now() - 1,
          secret,
        )
        .toArray(),
    );
    expect(stored).toEqual([{ userId: alice, expiresAt: expect.any(Number) }]);
    await expectError(await upgrade(conv.id, null, { ticket }), 401, "unauthenticated");
  });
});

describe("the ws route", () => {
  it("answers a request without Upgrade: websocket with 426 upgrade_required", async () => {
    const { alice, conv } = await pair();
    await expectError(await call(`/v1/conversations/${conv.id}/ws`, { as: alice }), 426, "upgrade_required");
    const { ticket } = await issueTicket(conv.id, alice);
    await expectError(await call(`/v1/conversations/${conv.id}/ws?ticket=${ticket}`), 426, "upgrade_required");
  });

  it("answers a non-participant with a valid token 404, with the body of a missing conversation", async () => {
    const { conv } = await pair();
    const mallory = uniqueUser("mallory");
    const res = await upgrade(conv.id, mallory);
    expect(res.status).toBe(404);
    const body = await res.text();
    expect(JSON.parse(body)).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    expect(body).toBe(await missingConversationBody(mallory));
    // Nor can they get a ticket for it.
    const ticket = await call(ticketPath(conv.id), { method: "POST", as: mallory });
    expect(ticket.status).toBe(404);
    const missing = await call(ticketPath("no-such-conversation"), { method: "POST", as: mallory });
    expect(await ticket.text()).toBe(await missing.text());
  });

  it("refuses an upgrade without a ticket or a token with 401", async () => {
    const { conv } = await pair();
    await expectError(await upgrade(conv.id, null), 401, "unauthenticated");
  });
});

describe("ALLOWED_ORIGINS", () => {
  const base: Env = env;

  it("allows every origin when unset, and only the listed ones (and no Origin) when set", () => {
    for (const unset of [undefined, "", " , "]) {
      const e = { ...base, ALLOWED_ORIGINS: unset };
      expect(isOriginAllowed(e, "https://evil.example")).toBe(true);
      expect(isOriginAllowed(e, undefined)).toBe(true);
    }
    const set = { ...base, ALLOWED_ORIGINS: "https://good.example, https://other.example" };
    expect(isOriginAllowed(set, "https://good.example")).toBe(true);
    expect(isOriginAllowed(set, "https://other.example")).toBe(true);
    expect(isOriginAllowed(set, "https://evil.example")).toBe(false);
    expect(isOriginAllowed(set, "https://good.example.evil.example")).toBe(false);
    expect(isOriginAllowed(set, "http://good.example")).toBe(false);
    expect(isOriginAllowed(set, "null")).toBe(false);
    expect(isOriginAllowed(set, undefined)).toBe(true);
  });

  describe("on the app", () => {
    const app = createApp(readLimits(env));
    const withOrigins = { ...base, ALLOWED_ORIGINS: "https://good.example" };
    const fetchApp = async (request: Request, bindings: Env = withOrigins) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(request, bindings, ctx);
      await waitOnExecutionContext(ctx);
      return res;
    };
    const upgradeFrom = async (conversationId: string, userId: string, origin: string, bindings?: Env) =>
      fetchApp(
        new Request(`https://chat.test/v1/conversations/${conversationId}/ws`, {
          headers: { Upgrade: "websocket", Origin: origin, Authorization: `Bearer ${await tokenFor(userId)}` },
        }),
        bindings,
      );
    const preflight = (origin: string, bindings?: Env) =>
      fetchApp(
        new Request("https://chat.test/v1/conversations", {
          method: "OPTIONS",
          headers: {
            Origin: origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
          },
        }),
        bindings,
      );

    it("refuses a WebSocket upgrade from an unlisted Origin with 403 forbidden, and takes a listed one", async () => {
      const { alice, conv } = await pair();
      await expectError(await upgradeFrom(conv.id, alice, "https://evil.example"), 403, "forbidden");
      const good = await upgradeFrom(conv.id, alice, "https://good.example");
      expect(good.status).toBe(101);
      good.webSocket?.accept();
      good.webSocket?.close(1000, "bye");
      // Unset: the same evil origin is let in.
      const open = await upgradeFrom(conv.id, alice, "https://evil.example", { ...base, ALLOWED_ORIGINS: undefined });
      expect(open.status).toBe(101);
      open.webSocket?.accept();
      open.webSocket?.close(1000, "bye");
    });

    it("refuses an unlisted Origin with a ticket too", async () => {
      const { alice, conv } = await pair();
      const url = async () =>
        `https://chat.test/v1/conversations/${conv.id}/ws?ticket=${(await issueTicket(conv.id, alice)).ticket}`;
      const evil = await fetchApp(
        new Request(await url(), { headers: { Upgrade: "websocket", Origin: "https://evil.example" } }),
      );
      await expectError(evil, 403, "forbidden");
      const good = await fetchApp(
        new Request(await url(), { headers: { Upgrade: "websocket", Origin: "https://good.example" } }),
      );
      expect(good.status).toBe(101);
      good.webSocket?.accept();
      good.webSocket?.close(1000, "bye");
    });

    it("answers CORS only for the listed origins", async () => {
      const good = await preflight("https://good.example");
      expect(good.status).toBeLessThan(300);
      expect(good.headers.get("Access-Control-Allow-Origin")).toBe("https://good.example");
      expect(good.headers.get("Access-Control-Allow-Headers") ?? "").toMatch(/authorization/i);

      const evil = await preflight("https://evil.example");
      expect(evil.headers.get("Access-Control-Allow-Origin")).toBeNull();

      const simple = await fetchApp(
        new Request("https://chat.test/health", { headers: { Origin: "https://evil.example" } }),
      );
      expect(simple.headers.get("Access-Control-Allow-Origin")).toBeNull();
      const simpleGood = await fetchApp(
        new Request("https://chat.test/health", { headers: { Origin: "https://good.example" } }),
      );
      expect(simpleGood.headers.get("Access-Control-Allow-Origin")).toBe("https://good.example");

      // Unset: any origin is answered.
      const open = await preflight("https://evil.example", { ...base, ALLOWED_ORIGINS: undefined });
      expect(open.headers.get("Access-Control-Allow-Origin")).toBe("https://evil.example");
    });
  });
});
