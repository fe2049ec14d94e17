// Bundles the demo page's script, demo/app.ts and the SDK it imports, into public/app.js (git-ignored).
// wrangler runs it as the `[build]` command, so `npm start`, `wrangler dev` and `wrangler deploy` always have it.
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));

await build({
  absWorkingDir: root,
  entryPoints: ["demo/app.ts"],
  outfile: "public/app.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
  banner: { js: "// Built from demo/app.ts by scripts/build-demo.mjs; do not edit." },
});
