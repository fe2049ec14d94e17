// `npm run -s push:keys`: a new VAPID key pair (RFC 8292) for Web Push, as .dev.vars lines. The public key is
// the uncompressed P-256 point that browsers take as `applicationServerKey`; the private key is its scalar.
// Both are base64url. Keep the private key secret: `wrangler secret put VAPID_PRIVATE_KEY` in production.
const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
const publicKey = Buffer.from(await crypto.subtle.exportKey("raw", pair.publicKey)).toString("base64url");
const { d: privateKey } = await crypto.subtle.exportKey("jwk", pair.privateKey);
console.log(`VAPID_PUBLIC_KEY=${publicKey}`);
console.log(`VAPID_PRIVATE_KEY=${privateKey}`);
