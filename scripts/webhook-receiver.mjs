// `npm run push:webhook [-- port]`: a local receiver of the push webhook, for trying notifications out. It
// checks each call's signature with PUSH_WEBHOOK_SECRET from .dev.vars, as a real receiver must, and prints
// the notification. The same checks in any language: HMAC-SHA256 over `${X-Push-Timestamp}.${raw body}` with
// the secret, hex, compared in constant time with X-Push-Signature (after "sha256="), and a recent timestamp.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { readDevVars } from "./dev-vars.mjs";

const port = Number(process.argv[2] ?? 8788);
const secret = process.env.PUSH_WEBHOOK_SECRET ?? readDevVars().PUSH_WEBHOOK_SECRET;
if (!secret) {
  console.error("Set PUSH_WEBHOOK_SECRET in .dev.vars first (README, Push notifications).");
  process.exit(2);
}
/** Calls older (or newer) than this are refused, so that a captured call cannot be replayed later. */
const MAX_SKEW_SECONDS = 300;

function verified(timestamp, signature, body) {
  if (!/^\d+$/.test(timestamp ?? "") || Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
    return false;
  }
  const expected = Buffer.from(
    `sha256=${createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex")}`,
  );
  const given = Buffer.from(signature ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (req.method !== "POST" || !verified(req.headers["x-push-timestamp"], req.headers["x-push-signature"], body)) {
      console.error(`refused a call: ${req.method} ${req.url}, bad or missing signature`);
      res.writeHead(401).end();
      return;
    }
    const event = JSON.parse(body.toString("utf8"));
    console.log(`notify ${event.userId}: [${event.title}] ${event.body}  (${event.conversationId}, id ${event.id})`);
    res.writeHead(204).end();
  });
}).listen(port, "127.0.0.1", () => console.log(`webhook receiver on http://127.0.0.1:${port}/`));
