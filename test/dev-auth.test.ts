import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { readLimits } from "../src/env";
import { withBindings } from "./d1-recorder";
import { call, expectError, uniqueUser } from "./helpers";

/** The Worker's app with extra variables, as `wrangler dev` would run it with them in .dev.vars. */
async function fetchWith(vars: Record<string, string>, path: string, init: RequestInit = {}): Promise<Response> {
  const app = createApp(readLimits(env));
  const ctx = createExecutionContext();
  const bindings = withBindings(env, vars as Partial<Cloudflare.Env>);
  const res = await app.fetch(new Request(`https://chat.test${path}`, init), bindings, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const postToken = (body: string, vars: Record<string, string> = { DEV_AUTH: "1" }) =>
  fetchWith(vars, "/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body });

describe("dev sign-in (POST /dev/token)", () => {
  it("does not exist without DEV_AUTH: the usual 404", async () => {
    // The test Worker reads a local .dev.vars too; in CI (a clean clone) there is none, so no DEV_AUTH.
    if (!Reflect.get(env, "DEV_AUTH")) {
      await expectError(await call("/dev/token", { method: "POST", body: { userId: "alice" } }), 404, "not_found");
    }
    await expectError(await postToken(JSON.stringify({ userId: "alice" }), { DEV_AUTH: "" }), 404, "not_found");
    await expectError(await postToken(JSON.stringify({ userId: "alice" }), { DEV_AUTH: "0" }), 404, "not_found");
  });

  it("does not exist when tokens are verified with a JWKS, which a dev token could not pass", async () => {
    const vars = { DEV_AUTH: "1", AUTH_JWKS_URL: "https://issuer.test/jwks.json" };
    await expectError(await postToken(JSON.stringify({ userId: "alice" }), vars), 404, "not_found");
  });

  it("with DEV_AUTH, gives a token that works on /v1 for that user", async () => {
    const alice = uniqueUser("alice");
    const res = await postToken(JSON.stringify({ userId: alice }));
    expect(res.status).toBe(200);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const { token } = (await res.json()) as { token: string };
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);

    const created = await call("/v1/conversations", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: { participantIds: [uniqueUser("bob")] },
    });
    expect(created.status).toBe(201);
    expect(await created.json()).toMatchObject({ createdBy: alice });
    const list = await call("/v1/conversations", { headers: { Authorization: `Bearer ${token}` } });
    expect(list.status).toBe(200);
  });

  it("refuses a bad user id, unknown fields and malformed JSON with 400", async () => {
    for (const body of [
      JSON.stringify({ userId: "has space" }),
      JSON.stringify({ userId: "" }),
      JSON.stringify({ userId: "x".repeat(129) }),
      JSON.stringify({ userId: 42 }),
      JSON.stringify({ userId: "alice", admin: true }),
      JSON.stringify({}),
      "{not json",
    ]) {
      await expectError(await postToken(body), 400, "validation_failed");
    }
    const detailed = await expectError(
      await postToken(JSON.stringify({ userId: "no/slash" })),
      400,
      "validation_failed",
    );
    expect(detailed.error.details).toEqual([{ path: "userId", message: "not a valid user id" }]);
  });

  it("answers only POST /dev/token", async () => {
    await expectError(await fetchWith({ DEV_AUTH: "1" }, "/dev/token"), 404, "not_found");
    await expectError(await fetchWith({ DEV_AUTH: "1" }, "/dev/other", { method: "POST" }), 404, "not_found");
  });
});
