// The local development secrets in .dev.vars (git-ignored): made once, with a random AUTH_SECRET and DEV_AUTH=1
// (the demo page's sign-in by name).
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const DEV_VARS = fileURLToPath(new URL("../.dev.vars", import.meta.url));

export function readDevVars() {
  if (!existsSync(DEV_VARS)) {
    const secret = randomBytes(32).toString("base64url");
    const lines = [
      "# Local development only; made by npm start.",
      `AUTH_SECRET=${secret}`,
      "# Sign-in by name on the demo page (POST /dev/token). Never set it in production.",
      "DEV_AUTH=1",
    ];
    writeFileSync(DEV_VARS, `${lines.join("\n")}\n`, { mode: 0o600 });
    console.error("Wrote .dev.vars with a new random AUTH_SECRET and DEV_AUTH=1");
  }
  const vars = {};
  for (const line of readFileSync(DEV_VARS, "utf8").split("\n")) {
    const match = line.match(/^\s*([A-Z0-9_]+)\s*=\s*"?(.*?)"?\s*$/);
    if (match) vars[match[1]] = match[2];
  }
  if (!vars.AUTH_SECRET) throw new Error(".dev.vars has no AUTH_SECRET; delete the file to make a new one");
  return vars;
}
