import { env } from "cloudflare:workers";
import { createLocalJWKSet, exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { type AuthConfig, verifyToken } from "../src/auth";
import { ApiError } from "../src/errors";
import { call, expectError, tokenFor, uniqueUser } from "./helpers";

const encoder = new TextEncoder();
const now = () => Math.floor(Date.now() / 1000);

const base64url = (value: unknown) =>
  btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

/** A GET of the caller's conversation list with this Authorization header (or none). */
const listWith = (authorization?: string) =>
  call("/v1/conversations", { headers: authorization === undefined ? {} : { Authorization: authorization } });

async function expectUnauthenticated(res: Response) {
  const body = await expectError(res, 401, "unauthenticated");
  expect(JSON.stringify(body)).not.toMatch(/JWS|JWT|jose|signature|claim/i);
}

const hs256 = (claims: Record<string, unknown>, secret = env.AUTH_SECRET ?? "") =>
  new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(encoder.encode(secret));

describe("REST authentication", () => {
  it("accepts a valid HS256 token (the control for every refusal below)", async () => {
    const res = await listWith(`Bearer ${await tokenFor(uniqueUser())}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ conversations: [], nextCursor: null });
  });

  it("refuses a request without an Authorization header", async () => {
    await expectUnauthenticated(await listWith());
  });

  it.each([
    ["an empty header", ""],
    ["the scheme only", "Bearer"],
    ["the scheme and a space", "Bearer "],
    ["another scheme", "Basic dXNlcjpwYXNz"],
    ["a token that is not a JWT", "Bearer not-a-jwt"],
    ["three dots of nothing", "Bearer .."],
    ["two tokens", "Bearer a.b.c d.e.f"],
  ])("refuses a malformed header: %s", async (_, header) => {
    await expectUnauthenticated(await listWith(header));
  });

  it("refuses a valid token without the Bearer scheme", async () => {
    await expectUnauthenticated(await listWith(await tokenFor(uniqueUser())));
  });

  it("refuses an expired token", async () => {
    await expectUnauthenticated(await listWith(`Bearer ${await tokenFor(uniqueUser(), now() - 120)}`));
  });

  it("refuses a token without exp", async () => {
    const token = await hs256({ sub: uniqueUser(), iat: now() });
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("refuses a token without sub", async () => {
    const token = await hs256({ iat: now(), exp: now() + 3600 });
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("refuses a token signed with another secret", async () => {
    const token = await hs256({ sub: uniqueUser(), exp: now() + 3600 }, "another-secret-that-is-long-enough-too");
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("refuses a token whose payload was changed after signing", async () => {
    const [header, , signature] = (await tokenFor(uniqueUser("alice"))).split(".");
    const forged = base64url({ sub: uniqueUser("mallory"), exp: now() + 3600 });
    await expectUnauthenticated(await listWith(`Bearer ${header}.${forged}.${signature}`));
  });

  it("refuses an unsigned alg:none token", async () => {
    const payload = { sub: uniqueUser(), iat: now(), exp: now() + 3600 };
    for (const header of [{ alg: "none", typ: "JWT" }, { alg: "None" }, { alg: "NONE", typ: "JWT" }]) {
      await expectUnauthenticated(await listWith(`Bearer ${base64url(header)}.${base64url(payload)}.`));
    }
  });

  it("refuses an RS256 token when the server expects HS256", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "RS256", typ: "JWT" })
      .setSubject(uniqueUser())
      .setExpirationTime("1h")
      .sign(privateKey);
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("refuses an HS384/HS512 token signed with the right secret (the algorithm is pinned)", async () => {
    for (const alg of ["HS384", "HS512"]) {
      const token = await new SignJWT({})
        .setProtectedHeader({ alg, typ: "JWT" })
        .setSubject(uniqueUser())
        .setExpirationTime("1h")
        .sign(encoder.encode(env.AUTH_SECRET));
      await expectUnauthenticated(await listWith(`Bearer ${token}`));
    }
  });

  it.each([
    ["a space", "bad user"],
    ["a pipe", "a|b"],
    ["a slash", "a/b"],
    ["an empty string", ""],
    ["129 characters", "u".repeat(129)],
    ["non-ASCII letters", "usér"],
  ])("refuses a sub that is not a user id: %s", async (_, sub) => {
    const token = await hs256({ sub, iat: now(), exp: now() + 3600 });
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("refuses a non-string sub", async () => {
    const token = await hs256({ sub: 12345, iat: now(), exp: now() + 3600 });
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("accepts a sub with every allowed character class", async () => {
    const res = await listWith(`Bearer ${await tokenFor(`${uniqueUser()}.A_z:9@x-`)}`);
    expect(res.status).toBe(200);
  });

  it("refuses a token that is not valid yet (nbf in the future)", async () => {
    const token = await hs256({ sub: uniqueUser(), nbf: now() + 3600, exp: now() + 7200 });
    await expectUnauthenticated(await listWith(`Bearer ${token}`));
  });

  it("requires a token on every /v1 route, before anything else is looked at", async () => {
    for (const [method, path] of [
      ["POST", "/v1/conversations"],
      ["GET", "/v1/conversations/some-id"],
      ["POST", "/v1/conversations/some-id/participants"],
      ["DELETE", "/v1/conversations/some-id/participants/someone"],
      ["GET", "/v1/no-such-route"],
    ] as const) {
      await expectUnauthenticated(await call(path, { method, body: method === "POST" ? {} : undefined }));
    }
  });
});

describe("verifyToken with a secret, an issuer and an audience", () => {
  const secret = encoder.encode("unit-test-secret-with-enough-length-for-hs256");
  const config: AuthConfig = { kind: "secret", secret, issuer: "https://issuer.test", audience: "chat-api" };
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setExpirationTime("5m").sign(secret);

  async function expectRefused(token: Promise<string> | string, cfg: AuthConfig = config) {
    const err = await verifyToken(await token, cfg).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code: "unauthenticated", status: 401 });
  }

  it("returns the sub when iss and aud are right", async () => {
    const token = await sign({ sub: "alice@example.com", iss: "https://issuer.test", aud: "chat-api" });
    await expect(verifyToken(token, config)).resolves.toBe("alice@example.com");
  });

  it("accepts an aud array that contains the audience", async () => {
    const token = await sign({ sub: "alice", iss: "https://issuer.test", aud: ["other", "chat-api"] });
    await expect(verifyToken(token, config)).resolves.toBe("alice");
  });

  it("throws unauthenticated for a wrong iss", async () => {
    await expectRefused(sign({ sub: "alice", iss: "https://evil.test", aud: "chat-api" }));
  });

  it("throws unauthenticated for a missing iss", async () => {
    await expectRefused(sign({ sub: "alice", aud: "chat-api" }));
  });

  it("throws unauthenticated for a wrong or missing aud", async () => {
    await expectRefused(sign({ sub: "alice", iss: "https://issuer.test", aud: "another-api" }));
    await expectRefused(sign({ sub: "alice", iss: "https://issuer.test" }));
  });

  it("ignores iss and aud when none are configured", async () => {
    const token = await sign({ sub: "alice", iss: "https://anyone.test", aud: "anything" });
    await expect(verifyToken(token, { kind: "secret", secret })).resolves.toBe("alice");
  });
});

describe("verifyToken with a JWKS", () => {
  async function keyPair(alg: "RS256" | "ES256", kid: string) {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
    return { privateKey, jwk };
  }

  async function setup(extraKeys: JWK[] = []) {
    const rsa = await keyPair("RS256", "rsa-1");
    const ec = await keyPair("ES256", "ec-1");
    const config: AuthConfig = {
      kind: "jwks",
      keys: createLocalJWKSet({ keys: [rsa.jwk, ec.jwk, ...extraKeys] }),
      issuer: "https://idp.test",
    };
    return { rsa, ec, config };
  }

  const claims = { iss: "https://idp.test" };

  it("verifies an RS256 and an ES256 token from the set", async () => {
    const { rsa, ec, config } = await setup();
    const rs = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: "rsa-1" })
      .setSubject("rsa-user")
      .setExpirationTime("5m")
      .sign(rsa.privateKey);
    const es = await new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "ec-1" })
      .setSubject("ec-user")
      .setExpirationTime("5m")
      .sign(ec.privateKey);
    await expect(verifyToken(rs, config)).resolves.toBe("rsa-user");
    await expect(verifyToken(es, config)).resolves.toBe("ec-user");
  });

  it("refuses an HS256 token signed with a random secret", async () => {
    const { config } = await setup();
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("mallory")
      .setExpirationTime("5m")
      .sign(crypto.getRandomValues(new Uint8Array(32)));
    await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
  });

  it("refuses RS512 and PS256 tokens from a key of the set that has no alg (the algorithm is pinned)", async () => {
    const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
    const privateJwk = await exportJWK(privateKey);
    const { config } = await setup([{ ...(await exportJWK(publicKey)), kid: "rsa-any" }]);
    if (config.kind !== "jwks") throw new Error("unreachable");
    for (const alg of ["PS256", "RS512"]) {
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg, kid: "rsa-any" })
        .setSubject("mallory")
        .setExpirationTime("5m")
        .sign(await importJWK(privateJwk, alg));
      // The control: without the pin, the same set verifies the token.
      await expect(jwtVerify(token, config.keys)).resolves.toMatchObject({ payload: { sub: "mallory" } });
      await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
    }
  });

  it("refuses a token signed by a key that is not in the set", async () => {
    const { config } = await setup();
    const stranger = await keyPair("ES256", "ec-1");
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "ec-1" })
      .setSubject("mallory")
      .setExpirationTime("5m")
      .sign(stranger.privateKey);
    await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
  });

  it("refuses an expired, an exp-less and an alg:none token", async () => {
    const { rsa, config } = await setup();
    const expired = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: "rsa-1" })
      .setSubject("alice")
      .setExpirationTime(now() - 120)
      .sign(rsa.privateKey);
    const noExp = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: "rsa-1" })
      .setSubject("alice")
      .sign(rsa.privateKey);
    const none = `${base64url({ alg: "none" })}.${base64url({ ...claims, sub: "alice", exp: now() + 300 })}.`;
    for (const token of [expired, noExp, none]) {
      await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
    }
  });

  it("refuses a token from the set with the wrong issuer", async () => {
    const { ec, config } = await setup();
    const token = await new SignJWT({ iss: "https://other-idp.test" })
      .setProtectedHeader({ alg: "ES256", kid: "ec-1" })
      .setSubject("alice")
      .setExpirationTime("5m")
      .sign(ec.privateKey);
    await expect(verifyToken(token, config)).rejects.toMatchObject({ code: "unauthenticated" });
  });
});
