import { importJWK, jwtVerify } from "jose";

// A browser's side of Web Push, written from the RFCs, to check what the server sends: the subscription's
// keys (RFC 8291 §2), the decryption of an aes128gcm body (RFC 8188, RFC 8291 §3.4), and the VAPID token's
// verification (RFC 8292 §2–3).

const encoder = new TextEncoder();

export const toBase64Url = (bytes: ArrayBuffer | Uint8Array) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");

export const fromBase64Url = (text: string) =>
  Uint8Array.from(atob(text.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** A browser's push subscription: a fresh P-256 key pair and auth secret, as PushSubscription.toJSON() has them. */
export interface FakeBrowser {
  endpoint: string;
  keys: { p256dh: string; auth: string };
  privateKey: CryptoKey;
  publicKeyBytes: Uint8Array;
  authSecret: Uint8Array;
}

export async function fakeBrowser(endpoint: string): Promise<FakeBrowser> {
  const pair = (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, [
    "deriveBits",
  ])) as CryptoKeyPair;
  const publicKeyBytes = new Uint8Array((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer);
  const authSecret = crypto.getRandomValues(new Uint8Array(16));
  return {
    endpoint,
    keys: { p256dh: toBase64Url(publicKeyBytes), auth: toBase64Url(authSecret) },
    privateKey: pair.privateKey,
    publicKeyBytes,
    authSecret,
  };
}

async function hkdf(salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, bytes: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, bytes * 8));
}

/** Decrypts a Web Push body as the browser does; throws when it was not encrypted for this subscription. */
export async function decryptPush(browser: FakeBrowser, body: Uint8Array): Promise<string> {
  // RFC 8188 §2.1: salt (16) | record size (4) | key id length (1) | key id (the server's ephemeral key).
  const salt = body.slice(0, 16);
  const recordSize = new DataView(body.buffer, body.byteOffset + 16, 4).getUint32(0);
  const idLength = body[20] ?? 0;
  const serverKey = body.slice(21, 21 + idLength);
  const ciphertext = body.slice(21 + idLength);
  if (idLength !== 65 || ciphertext.length > recordSize) throw new Error("not a single aes128gcm record");

  const serverPublic = await crypto.subtle.importKey(
    "raw",
    serverKey,
    { name: "ECDH", namedCurve: "P-256" },
    false,
    [],
  );
  const ecdhSecret = new Uint8Array(
    // The standard's member is `public` (workers-types spells it `$public`).
    await crypto.subtle.deriveBits(
      { name: "ECDH", public: serverPublic } as unknown as SubtleCryptoDeriveKeyAlgorithm,
      browser.privateKey,
      256,
    ),
  );
  // RFC 8291 §3.4: IKM from the shared secret and the auth secret, then the content key and nonce (RFC 8188).
  const keyInfo = concat(encoder.encode("WebPush: info\0"), browser.publicKeyBytes, serverKey);
  const ikm = await hkdf(browser.authSecret, ecdhSecret, keyInfo, 32);
  const cek = await hkdf(salt, ikm, encoder.encode("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, encoder.encode("Content-Encoding: nonce\0"), 12);
  const aes = await crypto.subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
  const padded = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, aes, ciphertext));

  // The last record ends with the delimiter 0x02, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 0x02) throw new Error("no last-record delimiter");
  return new TextDecoder().decode(padded.slice(0, end));
}

/**
 * Verifies a VAPID `Authorization: vapid t=<JWT>, k=<public key>` header against the expected public key:
 * an ES256 JWT whose audience is the push service's origin. Returns the JWT's claims.
 */
export async function verifyVapid(authorization: string, expectedPublicKey: string, endpoint: string) {
  const match = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization);
  if (!match) throw new Error(`not a vapid Authorization header: ${authorization}`);
  const [, token = "", k = ""] = match;
  if (k !== expectedPublicKey) throw new Error("k is not the VAPID public key");
  const point = fromBase64Url(expectedPublicKey);
  const key = await importJWK(
    { kty: "EC", crv: "P-256", x: toBase64Url(point.slice(1, 33)), y: toBase64Url(point.slice(33, 65)) },
    "ES256",
  );
  const { payload, protectedHeader } = await jwtVerify(token, key, {
    algorithms: ["ES256"],
    audience: new URL(endpoint).origin,
  });
  return { payload, protectedHeader };
}

/** The webhook signature as a receiver recomputes it: hex HMAC-SHA256 over `timestamp.body`. */
export async function expectedWebhookSignature(secret: string, timestamp: string, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`)));
  return `sha256=${[...mac].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}
