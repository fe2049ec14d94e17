import {
  createExecutionContext,
  evictDurableObject,
  listDurableObjectIds,
  waitOnExecutionContext,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createLocalJWKSet, exportJWK, exportSPKI, generateKeyPair, type JWK, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { type AuthConfig, verifyToken } from "../src/auth";
import { readLimits } from "../src/env";
import type { MessageDto } from "../src/schemas";
import { withBindings } from "./d1-recorder";
import { call, createConversation, expectError, projected, roomFingerprint, tokenFor, uniqueUser } from "./helpers";
import { connect, TestSocket, upgrade } from "./socket";

/*
 * Security as tables: every conversation route for someone who is not in it, every broken token, every misuse
 * of a ticket, spoofed identities, fields a client must not set, and the limits that stop floods.
 */

const encoder = new TextEncoder();
const nowSeconds = () => Math.floor(Date.now() / 1000);
const b64 = (value: unknown) =>
  btoa(JSON.stringify(value)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");

async function trio() {
  const owner = uniqueUser("owner");
  const member = uniqueUser("member");
  const stranger = uniqueUser("stranger");
  const conv = await createConversation(owner, [member], { title: "private" });
  const sent = await call(`/v1/conversations/${conv.id}/messages`, {
    method: "POST",
    as: owner,
    body: { content: "secret", localId: "s1" },
  });
  expect(sent.status).toBe(201);
  // D1's list projection is written shortly after: let it settle, so that "nothing changed" means it.
  await projected(conv.id);
  return { owner, member, stranger, conv };
}

/** The conversation in its room (the system of record) and in D1 (the directory). */
async function d1Fingerprint(conversationId: string) {
  const room = await roomFingerprint(conversationId);
  const directory = await env.DB.prepare(
    `SELECT
       (SELECT group_concat(user_id || ':' || role || ':' || last_read_seq || ':' || last_delivered_seq, '|')
          FROM participants WHERE conversation_id = ?1) AS participants,
       (SELECT updated_at || ':' || last_seq || ':' || coalesce(title, '') FROM conversations WHERE id = ?1) AS conversation,
       (SELECT count(*) FROM conversations) AS conversations`,
  )
    .bind(conversationId)
    .first();
  return { room, directory };
}

interface RouteCase {
  name: string;
  method: string;
  path: (id: string, who: string, others: { member: string }) => string;
  body?: unknown;
  headers?: Record<string, string>;
}

/** Every route under /v1/conversations/:id, with a body that would be right for a participant. */
const conversationRoutes: RouteCase[] = [
  { name: "get the conversation", method: "GET", path: (id) => `/v1/conversations/${id}` },
  {
    name: "add participants",
    method: "POST",
    path: (id) => `/v1/conversations/${id}/participants`,
    body: { userIds: ["someone-new"] },
  },
  {
    name: "remove a participant",
    method: "DELETE",
    path: (id, _, o) => `/v1/conversations/${id}/participants/${o.member}`,
  },
  { name: "leave", method: "DELETE", path: (id, who) => `/v1/conversations/${id}/participants/${who}` },
  { name: "read history", method: "GET", path: (id) => `/v1/conversations/${id}/messages` },
  { name: "read history after", method: "GET", path: (id) => `/v1/conversations/${id}/messages?after=0` },
  {
    name: "send a message",
    method: "POST",
    path: (id) => `/v1/conversations/${id}/messages`,
    body: { content: "let me in", localId: "x1" },
  },
  {
    name: "edit a message",
    method: "PATCH",
    path: (id) => `/v1/conversations/${id}/messages/1`,
    body: { content: "mine now" },
  },
  { name: "delete a message", method: "DELETE", path: (id) => `/v1/conversations/${id}/messages/1` },
  { name: "mark read", method: "POST", path: (id) => `/v1/conversations/${id}/read`, body: { seq: 1 } },
  { name: "typing", method: "POST", path: (id) => `/v1/conversations/${id}/typing`, body: { typing: true } },
  { name: "ask for a ticket", method: "POST", path: (id) => `/v1/conversations/${id}/ticket` },
  {
    name: "open the socket",
    method: "GET",
    path: (id) => `/v1/conversations/${id}/ws`,
    headers: { Upgrade: "websocket" },
  },
  {
    name: "open the socket since 0",
    method: "GET",
    path: (id) => `/v1/conversations/${id}/ws?since=0`,
    headers: { Upgrade: "websocket" },
  },
];

describe("a non-participant gets the missing-conversation 404 on every route", () => {
  for (const route of conversationRoutes) {
    it(`${route.name}: a stranger and a removed participant get the bytes of a missing id, and nothing changes`, async () => {
      const { owner, member, stranger, conv } = await trio();
      const former = uniqueUser("former");
      expect(
        (
          await call(`/v1/conversations/${conv.id}/participants`, {
            method: "POST",
            as: owner,
            body: { userIds: [former] },
          })
        ).status,
      ).toBe(200);
      expect(
        (await call(`/v1/conversations/${conv.id}/participants/${former}`, { method: "DELETE", as: owner })).status,
      ).toBe(204);
      const watcher = await connect(conv.id, member);
      const before = await d1Fingerprint(conv.id);

      const ask = (id: string, who: string) =>
        call(route.path(id, who, { member }), {
          method: route.method,
          as: who,
          body: route.body,
          headers: route.headers,
        });
      for (const who of [stranger, former]) {
        const missing = await ask("AAAAAAAAAAAAAAAAAAAAAA", who);
        const hidden = await ask(conv.id, who);
        const [missingText, hiddenText] = [await missing.text(), await hidden.text()];
        if (route.name === "leave" && who === former) {
          // On purpose, a removed participant's repeated leave is answered as the first one was (204, and it
          // repairs D1's membership); it changes nothing, and a missing id is still the missing 404 for them.
          expect({ status: hidden.status, body: hiddenText }, `${route.name} as ${who}`).toEqual({
            status: 204,
            body: "",
          });
          expect(missing.status).toBe(404);
          expect(JSON.parse(missingText)).toEqual({ error: { code: "not_found", message: expect.any(String) } });
          continue;
        }
        expect({ status: hidden.status, body: hiddenText }, `${route.name} as ${who}`).toEqual({
          status: 404,
          body: missingText,
        });
        expect(missing.status).toBe(404);
        expect(JSON.parse(hiddenText)).toEqual({ error: { code: "not_found", message: expect.any(String) } });
        expect([...hidden.headers]).toEqual([...missing.headers]);
        expect(hidden.headers.get("Retry-After")).toBeNull();
      }
      // Anonymous: the same 401, bytes and headers, whether the conversation exists or not.
      const anonymous = (id: string) =>
        call(route.path(id, stranger, { member }), { method: route.method, body: route.body, headers: route.headers });
      const [anonHidden, anonMissing] = [await anonymous(conv.id), await anonymous("AAAAAAAAAAAAAAAAAAAAAA")];
      expect({ status: anonHidden.status, body: await anonHidden.text(), headers: [...anonHidden.headers] }).toEqual({
        status: 401,
        body: await anonMissing.text(),
        headers: [...anonMissing.headers],
      });

      expect(await d1Fingerprint(conv.id)).toEqual(before);
      // Nor did the conversation hear of them: a message from the owner is the next thing its socket gets.
      expect(
        (await call(`/v1/conversations/${conv.id}/messages`, { method: "POST", as: owner, body: { content: "fence" } }))
          .status,
      ).toBe(201);
      await watcher.next("message", (f) => f.message.content === "fence");
      expect(watcher.frames.filter((f) => f.type !== "ready" && f.type !== "message")).toEqual([]);
      const list = await call("/v1/conversations", { as: stranger });
      expect(((await list.json()) as { conversations: unknown[] }).conversations).toEqual([]);
      watcher.close();
    });
  }
});

// ---- Tokens -----------------------------------------------------------------------------------------------

const secret = () => encoder.encode(env.AUTH_SECRET ?? "");

async function hs(claims: Record<string, unknown>, header: Record<string, unknown> = {}, key = secret()) {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT", ...header }).sign(key);
}

/** A token in each way a token can be wrong, for `sub`. */
async function badTokens(sub: string): Promise<[string, string][]> {
  const now = nowSeconds();
  const good = { sub, iat: now, exp: now + 600 };
  const { privateKey: rsa } = await generateKeyPair("RS256");
  const { privateKey: ec } = await generateKeyPair("ES256");
  const [h, p, s] = (await hs(good)).split(".") as [string, string, string];
  return [
    ["alg none", `${b64({ alg: "none", typ: "JWT" })}.${b64(good)}.`],
    ["alg none with a signature", `${b64({ alg: "none" })}.${b64(good)}.${s}`],
    ["alg NONE", `${b64({ alg: "NONE" })}.${b64(good)}.`],
    ["alg missing", `${b64({ typ: "JWT" })}.${b64(good)}.${s}`],
    ["RS256 where HS256 is pinned", await new SignJWT(good).setProtectedHeader({ alg: "RS256" }).sign(rsa)],
    ["ES256 where HS256 is pinned", await new SignJWT(good).setProtectedHeader({ alg: "ES256" }).sign(ec)],
    ["HS512 with the right secret", await new SignJWT(good).setProtectedHeader({ alg: "HS512" }).sign(secret())],
    ["expired a second ago", await hs({ ...good, exp: now - 1 })],
    ["expired long ago", await hs({ ...good, iat: now - 7200, exp: now - 3600 })],
    ["not valid yet (nbf)", await hs({ ...good, nbf: now + 60 })],
    ["no exp", await hs({ sub, iat: now })],
    ["exp not a number", await hs({ ...good, exp: "tomorrow" })],
    ["no sub", await hs({ iat: now, exp: now + 600 })],
    ["sub not a user id", await hs({ ...good, sub: "a b" })],
    ["signed with another secret", await hs(good, {}, encoder.encode("another-secret-that-is-long-enough-too"))],
    ["signed with an empty secret", await hs(good, {}, new Uint8Array(0)).catch(() => `${h}.${p}.`)],
    ["signature cut", `${h}.${p}.${s.slice(0, -4)}`],
    ["signature of another token", `${h}.${b64({ ...good, sub: `${sub}-x` })}.${s}`],
    ["payload swapped in", `${h}.${b64({ ...good, exp: now + 999_999 })}.${s}`],
    [
      "crit header not understood",
      await hs(good, { crit: ["exp"] }).catch(() => `${b64({ alg: "HS256", crit: ["x"] })}.${p}.${s}`),
    ],
    ["two parts", `${h}.${p}`],
    ["four parts", `${h}.${p}.${s}.${s}`],
  ];
}

describe("tokens: every broken token is 401 on REST and on the socket route", () => {
  it("refuses each broken token, while the same user's good token works (the control)", async () => {
    const { member, conv } = await trio();
    const good = await tokenFor(member);
    expect((await call(`/v1/conversations/${conv.id}`, { headers: { Authorization: `Bearer ${good}` } })).status).toBe(
      200,
    );
    const ok = await upgrade(conv.id, null, { headers: { Authorization: `Bearer ${good}` } });
    expect(ok.status).toBe(101);
    ok.webSocket?.accept();
    ok.webSocket?.close(1000, "bye");

    for (const [name, token] of await badTokens(member)) {
      const headers = { Authorization: `Bearer ${token}` };
      await expectError(await call(`/v1/conversations/${conv.id}`, { headers }), 401, "unauthenticated").catch((e) => {
        throw new Error(`REST, ${name}: ${e}`);
      });
      await expectError(
        await call(`/v1/conversations/${conv.id}/messages`, { method: "POST", headers, body: { content: "x" } }),
        401,
        "unauthenticated",
      );
      await expectError(await upgrade(conv.id, null, { headers }), 401, "unauthenticated").catch((e) => {
        throw new Error(`socket, ${name}: ${e}`);
      });
    }
  });

  describe("with AUTH_ISSUER and AUTH_AUDIENCE set, through the app", () => {
    const app = createApp(readLimits(env));
    const bindings = withBindings(env, { AUTH_ISSUER: "https://issuer.test", AUTH_AUDIENCE: "chat-api" });
    const fetchApp = async (path: string, token: string, headers: Record<string, string> = {}) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request(`https://chat.test${path}`, { headers: { Authorization: `Bearer ${token}`, ...headers } }),
        bindings,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return res;
    };

    it.each([
      ["wrong iss", { iss: "https://evil.test", aud: "chat-api" }],
      ["no iss", { aud: "chat-api" }],
      ["wrong aud", { iss: "https://issuer.test", aud: "other-api" }],
      ["no aud", { iss: "https://issuer.test" }],
      ["aud list without ours", { iss: "https://issuer.test", aud: ["a", "b"] }],
      ["iss with a trailing slash", { iss: "https://issuer.test/", aud: "chat-api" }],
    ])("refuses %s on REST and on the socket route", async (_, claims) => {
      const { member, conv } = await trio();
      const now = nowSeconds();
      const right = await hs({ sub: member, exp: now + 600, iss: "https://issuer.test", aud: "chat-api" });
      expect((await fetchApp(`/v1/conversations/${conv.id}`, right)).status).toBe(200);
      const wrong = await hs({ sub: member, exp: now + 600, ...claims });
      await expectError(await fetchApp(`/v1/conversations/${conv.id}`, wrong), 401, "unauthenticated");
      await expectError(
        await fetchApp(`/v1/conversations/${conv.id}/ws`, wrong, { Upgrade: "websocket" }),
        401,
        "unauthenticated",
      );
    });
  });

  describe("with a JWKS (RS256/ES256)", () => {
    async function jwksSetup() {
      const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
      const jwk: JWK = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
      const config: AuthConfig = { kind: "jwks", keys: createLocalJWKSet({ keys: [jwk] }) };
      return { privateKey, publicKey, jwk, config };
    }
    const claims = () => ({ sub: "mallory", exp: nowSeconds() + 600 });

    it("accepts the key's own RS256 token (the control)", async () => {
      const { privateKey, config } = await jwksSetup();
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(privateKey);
      await expect(verifyToken(token, config)).resolves.toBe("mallory");
    });

    it("refuses HS/RS confusion: an HS256 token keyed with the public key itself", async () => {
      const { publicKey, jwk, config } = await jwksSetup();
      const pem = await exportSPKI(publicKey);
      for (const key of [pem, JSON.stringify(jwk), jwk.n ?? ""]) {
        const token = await hs(claims(), { kid: "k1" }, encoder.encode(key));
        await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
      }
    });

    it("refuses a token that brings its own key (jwk, jku, x5u headers) or names an unknown kid", async () => {
      const { config } = await jwksSetup();
      const attacker = await generateKeyPair("RS256", { extractable: true });
      const attackerJwk = await exportJWK(attacker.publicKey);
      for (const header of [
        { alg: "RS256", jwk: attackerJwk },
        { alg: "RS256", kid: "k1", jwk: attackerJwk },
        { alg: "RS256", kid: "k1", jku: "https://evil.test/jwks.json" },
        { alg: "RS256", kid: "k1", x5u: "https://evil.test/cert.pem" },
        { alg: "RS256", kid: "k2" },
        { alg: "RS256", kid: "../../k1" },
      ]) {
        const token = await new SignJWT(claims()).setProtectedHeader(header).sign(attacker.privateKey);
        await expect(verifyToken(token, config), JSON.stringify(header)).rejects.toMatchObject({
          code: "unauthenticated",
        });
      }
    });

    it("refuses alg none, an expired and a not-yet-valid token", async () => {
      const { privateKey, config } = await jwksSetup();
      const now = nowSeconds();
      const tokens = [
        `${b64({ alg: "none", kid: "k1" })}.${b64(claims())}.`,
        await new SignJWT({ sub: "mallory", exp: now - 1 })
          .setProtectedHeader({ alg: "RS256", kid: "k1" })
          .sign(privateKey),
        await new SignJWT({ sub: "mallory", nbf: now + 60, exp: now + 600 })
          .setProtectedHeader({ alg: "RS256", kid: "k1" })
          .sign(privateKey),
      ];
      for (const token of tokens)
        await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
    });
  });
});

// ---- Tickets ----------------------------------------------------------------------------------------------

async function ticket(conversationId: string, as: string): Promise<string> {
  const res = await call(`/v1/conversations/${conversationId}/ticket`, { method: "POST", as });
  expect(res.status).toBe(201);
  return ((await res.json()) as { ticket: string }).ticket;
}

describe("tickets", () => {
  it("work once even when two upgrades race with the same ticket", async () => {
    const { member, conv } = await trio();
    for (let round = 0; round < 5; round++) {
      const t = await ticket(conv.id, member);
      const answers = await Promise.all([upgrade(conv.id, null, { ticket: t }), upgrade(conv.id, null, { ticket: t })]);
      expect(answers.map((r) => r.status).sort()).toEqual([101, 401]);
      for (const r of answers) {
        r.webSocket?.accept();
        r.webSocket?.close(1000, "bye");
      }
    }
  });

  it("open a socket of the ticket's user, whatever identity headers come along", async () => {
    const { owner, member, conv } = await trio();
    const t = await ticket(conv.id, member);
    const res = await upgrade(conv.id, owner, { ticket: t, headers: { "X-User-Id": owner } });
    expect(res.status).toBe(101);
    const socket = new TestSocket(res.webSocket as WebSocket);
    const ready = await socket.next("ready");
    expect(ready.userId).toBe(member);
    socket.send({ type: "send", localId: "via-ticket", content: "who am I" });
    expect((await socket.next("ack")).message.senderId).toBe(member);
    socket.close();
  });

  it("do not authenticate anything but the socket route", async () => {
    const { member, conv } = await trio();
    const t = await ticket(conv.id, member);
    for (const [method, path] of [
      ["GET", `/v1/conversations/${conv.id}?ticket=${t}`],
      ["GET", `/v1/conversations/${conv.id}/messages?ticket=${t}`],
      ["POST", `/v1/conversations/${conv.id}/ticket?ticket=${t}`],
      ["GET", `/v1/conversations?ticket=${t}`],
      ["GET", `/v1/conversations/${conv.id}/ws/?ticket=${t}`],
    ] as const) {
      await expectError(await call(path, { method }), 401, "unauthenticated");
    }
    // A method the socket route does not take finds no route, and the ticket is still good for the socket.
    await expectError(await call(`/v1/conversations/${conv.id}/ws?ticket=${t}`, { method: "POST" }), 404, "not_found");
    const socket = await connect(conv.id, null, { ticket: t });
    expect(socket.frames[0]).toMatchObject({ type: "ready", userId: member });
    socket.close();
  });

  it("without a token, a bogus ticket answers the same for an existing, unknown or malformed id, waking nothing", async () => {
    const { conv } = await trio();
    const unknown = `never-${uniqueUser("id")}`;
    const roomsBefore = (await listDurableObjectIds(env.ROOMS)).length;
    const inboxesBefore = (await listDurableObjectIds(env.INBOXES)).length;
    const answers = [];
    for (const path of [
      `/v1/conversations/${conv.id}/ws`,
      `/v1/conversations/${unknown}/ws`,
      "/v1/conversations/not%20an%20id/ws",
      "/v1/inbox/ws",
    ]) {
      for (const ticket of ["x", `${"A".repeat(22)}.${"B".repeat(22)}`, `${btoa(unknown)}.x`]) {
        const res = await call(`${path}?ticket=${encodeURIComponent(ticket)}`, { headers: { Upgrade: "websocket" } });
        answers.push({ status: res.status, body: await res.text(), headers: [...res.headers].sort() });
      }
    }
    expect(answers[0]?.status).toBe(401);
    for (const answer of answers) expect(answer).toEqual(answers[0]);
    // Refused in the Worker: no Object was woken (and none created) to tell.
    expect((await listDurableObjectIds(env.ROOMS)).length).toBe(roomsBefore);
    expect((await listDurableObjectIds(env.INBOXES)).length).toBe(inboxesBefore);
  });

  it("of another conversation, expired, unknown or reused are 401; of a removed user 404", async () => {
    const { owner, member, conv } = await trio();
    const other = await createConversation(owner, [member]);
    const forOther = await ticket(other.id, member);
    await expectError(await upgrade(conv.id, null, { ticket: forOther }), 401, "unauthenticated");
    const used = await ticket(conv.id, member);
    (await connect(conv.id, null, { ticket: used })).close();
    await expectError(await upgrade(conv.id, null, { ticket: used }), 401, "unauthenticated");
    for (const junk of ["", "x", "x".repeat(200), `${forOther}x`]) {
      await expectError(await upgrade(conv.id, null, { ticket: junk }), 401, "unauthenticated");
    }
    await expectError(await upgrade(conv.id, null, { ticket: "x".repeat(201) }), 400, "validation_failed");
    const removedSoon = await ticket(conv.id, member);
    expect(
      (await call(`/v1/conversations/${conv.id}/participants/${member}`, { method: "DELETE", as: owner })).status,
    ).toBe(204);
    await expectError(await upgrade(conv.id, null, { ticket: removedSoon }), 404, "not_found");
  });
});

// ---- Origins ----------------------------------------------------------------------------------------------

describe("origins", () => {
  it("refuse every look-alike of an allowed Origin with 403 on the socket route", async () => {
    const { member, conv } = await trio();
    const app = createApp(readLimits(env));
    const bindings = withBindings(env, { ALLOWED_ORIGINS: "https://chat.example" });
    const token = await tokenFor(member);
    const attempt = async (origin: string) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request(`https://chat.test/v1/conversations/${conv.id}/ws`, {
          headers: { Upgrade: "websocket", Origin: origin, Authorization: `Bearer ${token}` },
        }),
        bindings,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return res;
    };
    for (const origin of [
      "https://evil.example",
      "http://chat.example",
      "https://chat.example.evil.example",
      "https://evilchat.example",
      "https://chat.example:8443",
      "https://chat.example/",
      "HTTPS://CHAT.EXAMPLE",
      "null",
      "",
      "https://chat.example, https://evil.example",
    ]) {
      await expectError(await attempt(origin), 403, "forbidden").catch((e) => {
        throw new Error(`Origin ${JSON.stringify(origin)}: ${e}`);
      });
    }
    const allowed = await attempt("https://chat.example");
    expect(allowed.status).toBe(101);
    allowed.webSocket?.accept();
    allowed.webSocket?.close(1000, "bye");
  });
});

// ---- Spoofing and mass assignment -------------------------------------------------------------------------

describe("spoofed identities are ignored", () => {
  it("X-User-Id, X-Conversation-Id and X-Since from a client do not reach the room", async () => {
    const { owner, member, conv } = await trio();
    const other = await createConversation(owner, [uniqueUser("x")]);
    const socket = await connect(conv.id, member, {
      since: 1,
      headers: { "X-User-Id": owner, "X-Conversation-Id": other.id, "X-Since": "0" },
    });
    expect(socket.frames[0]).toMatchObject({ type: "ready", userId: member, conversationId: conv.id });
    // since=1 was asked: the message at seq 1 is not replayed as an X-Since of 0 would.
    socket.send({ type: "send", localId: "spoof", content: "mine" });
    const ack = await socket.next("ack");
    expect(ack.message).toMatchObject({ senderId: member, conversationId: conv.id, seq: 2 });
    expect(socket.of("message")).toEqual([]);
    socket.close();
  });

  it("a REST send is the token's, whatever the headers and query say", async () => {
    const { owner, member, conv } = await trio();
    const res = await call(`/v1/conversations/${conv.id}/messages?senderId=${owner}&seq=99`, {
      method: "POST",
      as: member,
      body: { content: "honest", localId: "h1" },
      headers: { "X-User-Id": owner, "X-Conversation-Id": "elsewhere" },
    });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ senderId: member, seq: 2, conversationId: conv.id });
  });
});

describe("mass assignment is refused with 400 naming the field, changing nothing", () => {
  const cases: [string, string, (id: string) => string, Record<string, unknown>, string][] = [
    [
      "create: createdBy",
      "POST",
      () => "/v1/conversations",
      { participantIds: ["p1"], createdBy: "victim" },
      "createdBy",
    ],
    ["create: role", "POST", () => "/v1/conversations", { participantIds: ["p1"], role: "member" }, "role"],
    ["create: id", "POST", () => "/v1/conversations", { participantIds: ["p1"], id: "chosen-id" }, "id"],
    ["create: lastSeq", "POST", () => "/v1/conversations", { participantIds: ["p1"], lastSeq: 10 }, "lastSeq"],
    [
      "create: participants",
      "POST",
      () => "/v1/conversations",
      { participantIds: ["p1"], participants: [] },
      "participants",
    ],
    ["add: role", "POST", (id) => `/v1/conversations/${id}/participants`, { userIds: ["p2"], role: "owner" }, "role"],
    [
      "add: lastReadSeq",
      "POST",
      (id) => `/v1/conversations/${id}/participants`,
      { userIds: ["p2"], lastReadSeq: 5 },
      "lastReadSeq",
    ],
    ["send: seq", "POST", (id) => `/v1/conversations/${id}/messages`, { content: "x", seq: 1 }, "seq"],
    [
      "send: senderId",
      "POST",
      (id) => `/v1/conversations/${id}/messages`,
      { content: "x", senderId: "victim" },
      "senderId",
    ],
    ["send: id", "POST", (id) => `/v1/conversations/${id}/messages`, { content: "x", id: "chosen" }, "id"],
    [
      "send: createdAt",
      "POST",
      (id) => `/v1/conversations/${id}/messages`,
      { content: "x", createdAt: "2000-01-01T00:00:00.000Z" },
      "createdAt",
    ],
    ["edit: seq", "PATCH", (id) => `/v1/conversations/${id}/messages/1`, { content: "x", seq: 2 }, "seq"],
    [
      "edit: senderId",
      "PATCH",
      (id) => `/v1/conversations/${id}/messages/1`,
      { content: "x", senderId: "victim" },
      "senderId",
    ],
    [
      "edit: deletedAt",
      "PATCH",
      (id) => `/v1/conversations/${id}/messages/1`,
      { content: "x", deletedAt: null },
      "deletedAt",
    ],
    [
      "read: lastDeliveredSeq",
      "POST",
      (id) => `/v1/conversations/${id}/read`,
      { seq: 1, lastDeliveredSeq: 99 },
      "lastDeliveredSeq",
    ],
    ["read: userId", "POST", (id) => `/v1/conversations/${id}/read`, { seq: 1, userId: "victim" }, "userId"],
    ["typing: userId", "POST", (id) => `/v1/conversations/${id}/typing`, { typing: true, userId: "victim" }, "userId"],
  ];

  it.each(cases)("%s", async (_, method, path, body, field) => {
    const { owner, conv } = await trio();
    const before = await d1Fingerprint(conv.id);
    const refused = await expectError(await call(path(conv.id), { method, as: owner, body }), 400, "validation_failed");
    expect(refused.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: field })]));
    expect(await d1Fingerprint(conv.id)).toEqual(before);
  });

  it("frames: a send, read or typing frame with someone else's fields is refused", async () => {
    const { owner, member, conv } = await trio();
    const socket = await connect(conv.id, member);
    const before = await d1Fingerprint(conv.id);
    const frames = [
      { type: "send", localId: "m1", content: "x", senderId: owner },
      { type: "send", localId: "m2", content: "x", seq: 1 },
      { type: "send", localId: "m3", content: "x", conversationId: "elsewhere" },
      { type: "read", seq: 1, userId: owner },
      { type: "typing", typing: true, userId: owner },
    ];
    for (const frame of frames) socket.send(frame);
    const errors = await socket.until((s) => s.of("error").length >= frames.length && s.of("error"));
    expect(errors.map((e) => e.code)).toEqual(frames.map(() => "validation_failed"));
    expect(await d1Fingerprint(conv.id)).toEqual(before);
    socket.close();
  });
});

// ---- Floods ------------------------------------------------------------------------------------------------

describe("rate limits", () => {
  it("give 429 with a Retry-After that is honest: after it, the next send is taken", { timeout: 15_000 }, async () => {
    const { member, conv } = await trio();
    const send = (i: number) =>
      call(`/v1/conversations/${conv.id}/messages`, {
        method: "POST",
        as: member,
        body: { content: `f${i}`, localId: `f${i}` },
      });
    const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => send(i)));
    const limited = burst.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    const waits = limited.map((r) => Number(r.headers.get("Retry-After")));
    for (const w of waits) expect(w).toBeGreaterThanOrEqual(1);
    await expectError(limited[0] as Response, 429, "rate_limited");
    await new Promise((r) => setTimeout(r, Math.min(...waits) * 1000));
    expect((await send(100)).status).toBe(201);
  });

  it("share one bucket between REST and sockets, per user and per conversation", { timeout: 15_000 }, async () => {
    const { owner, member, conv } = await trio();
    const other = await createConversation(member, [owner]);
    const burst = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        call(`/v1/conversations/${conv.id}/messages`, { method: "POST", as: member, body: { content: `r${i}` } }),
      ),
    );
    expect(burst.some((r) => r.status === 429)).toBe(true);
    const socket = await connect(conv.id, member);
    socket.send({ type: "send", localId: "after-rest", content: "x" });
    expect(await socket.next("error")).toMatchObject({
      code: "rate_limited",
      ref: "after-rest",
      retryAfterMs: expect.any(Number),
    });
    // Another user in the same conversation, and the same user in another one, have their own buckets.
    expect(
      (await call(`/v1/conversations/${conv.id}/messages`, { method: "POST", as: owner, body: { content: "o" } }))
        .status,
    ).toBe(201);
    expect(
      (await call(`/v1/conversations/${other.id}/messages`, { method: "POST", as: member, body: { content: "m" } }))
        .status,
    ).toBe(201);
    socket.close();
  });
});

describe("the socket cap", () => {
  it("counts header and ticket sockets together, and holds across a hibernation", async () => {
    const { member, conv } = await trio();
    const sockets: TestSocket[] = [];
    for (let i = 0; i < 5; i++) sockets.push(await connect(conv.id, member));
    for (let i = 0; i < 5; i++) sockets.push(await connect(conv.id, null, { ticket: await ticket(conv.id, member) }));
    await expectError(await upgrade(conv.id, member), 429, "rate_limited");
    await expectError(await upgrade(conv.id, null, { ticket: await ticket(conv.id, member) }), 429, "rate_limited");

    await evictDurableObject(env.ROOMS.getByName(conv.id), { webSockets: "hibernate" });
    const refused = await upgrade(conv.id, member);
    await expectError(refused, 429, "rate_limited");
    expect(refused.headers.get("Retry-After")).toMatch(/^[1-9]\d*$/);
    for (const s of sockets) expect(s.closed).toBeUndefined();

    const first = sockets.shift() as TestSocket;
    first.close();
    await first.waitClosed();
    const again = await connect(conv.id, member);
    for (const s of [...sockets, again]) s.close();
  });

  it("is per user: other users still connect when one is at the cap", async () => {
    const { owner, member, conv } = await trio();
    const mine: TestSocket[] = [];
    for (let i = 0; i < 10; i++) mine.push(await connect(conv.id, member));
    const theirs = await connect(conv.id, owner);
    expect(theirs.frames[0]).toMatchObject({ type: "ready", userId: owner });
    const sent = await call(`/v1/conversations/${conv.id}/messages`, {
      method: "POST",
      as: owner,
      body: { content: "all of you" },
    });
    const message = (await sent.json()) as MessageDto;
    for (const s of mine) expect((await s.next("message")).message.id).toBe(message.id);
    for (const s of [...mine, theirs]) s.close();
  });
});
