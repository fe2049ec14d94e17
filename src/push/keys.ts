// The encodings of a browser's push subscription (PushSubscription.toJSON()): base64url without padding.

/** The bytes of a base64url string (padding tolerated), or null when it is not one. */
export function base64UrlBytes(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(text) || text.replace(/=+$/, "").length % 4 === 1) return null;
  const base64 = text.replace(/=+$/, "").replaceAll("-", "+").replaceAll("_", "/");
  try {
    return Uint8Array.from(atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** Whether `p256dh` is an uncompressed point on P-256 (65 bytes, 0x04 first), as RFC 8291 requires. */
export async function isP256PublicKey(p256dh: string): Promise<boolean> {
  const bytes = base64UrlBytes(p256dh);
  if (bytes?.length !== 65 || bytes[0] !== 0x04) return false;
  try {
    await crypto.subtle.importKey("raw", bytes, { name: "ECDH", namedCurve: "P-256" }, false, []);
    return true;
  } catch {
    return false;
  }
}
