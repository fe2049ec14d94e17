// `npm start`: the service on this machine with its embedded defaults: a dev secret, the local D1 with
// every migration applied, then `wrangler dev`. Extra arguments go to `wrangler dev` (e.g. `-- --port 9000`).
import { spawn, spawnSync } from "node:child_process";
import { readDevVars } from "./dev-vars.mjs";

if (!readDevVars().DEV_AUTH) {
  console.error("Note: .dev.vars has no DEV_AUTH=1, so the demo page cannot sign in; add that line to it.");
}

const migrate = spawnSync("wrangler", ["d1", "migrations", "apply", "DB", "--local"], {
  stdio: ["ignore", "inherit", "inherit"],
  shell: process.platform === "win32",
});
if (migrate.status !== 0) process.exit(migrate.status ?? 1);

const dev = spawn("wrangler", ["dev", ...process.argv.slice(2)], {
  stdio: "inherit",
  shell: process.platform === "win32",
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => dev.kill(signal));
dev.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
