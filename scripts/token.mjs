// `npm run token -- <userId> [ttlSeconds]`: prints a token for the local service, signed with .dev.vars.
import { SignJWT } from "jose";
import { readDevVars } from "./dev-vars.mjs";

const [userId, ttl = "86400"] = process.argv.slice(2);
if (!userId || !/^[A-Za-z0-9._:@-]{1,128}$/.test(userId) || !/^\d+$/.test(ttl)) {
  console.error("usage: npm run token -- <userId> [ttlSeconds]   (userId: letters, digits and . _ : @ -)");
  process.exit(2);
}
const { AUTH_SECRET } = readDevVars();
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({})
  .setProtectedHeader({ alg: "HS256", typ: "JWT" })
  .setSubject(userId)
  .setIssuedAt(now)
  .setExpirationTime(now + Number(ttl))
  .sign(new TextEncoder().encode(AUTH_SECRET));
console.log(token);
