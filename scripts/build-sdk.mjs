// Builds the SDK package (sdk/, published as `edge-chat-client`): src/client/ compiled by tsc with
// sdk/tsconfig.json into sdk/dist, ES modules with their declarations, one file per module. Then checks what
// a published package must not have: an import of anything but its own files (and `react`, from its React
// entry only), which would be a dependency nobody installs, or the server's zod, Hono or Workers types.
// `npm run build:sdk`; `npm run test:sdk` builds, packs and installs it as an app would.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = fileURLToPath(new URL("..", import.meta.url));
const sdk = path.join(root, "sdk");
const dist = path.join(sdk, "dist");

rmSync(dist, { recursive: true, force: true });
const configPath = path.join(sdk, "tsconfig.json");
const { config, error } = ts.readConfigFile(configPath, ts.sys.readFile);
if (error) fail(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
const parsed = ts.parseJsonConfigFileContent(config, ts.sys, sdk);
const program = ts.createProgram(parsed.fileNames, parsed.options);
const emitted = program.emit();
const diagnostics = [...parsed.errors, ...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
if (diagnostics.length > 0) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" };
  fail(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
}

// Every module specifier of the output: static imports and re-exports, and dynamic imports.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g;
const problems = [];
const files = readdirSync(dist);
for (const file of files) {
  const text = readFileSync(path.join(dist, file), "utf8");
  for (const [, specifier] of text.matchAll(SPECIFIER)) {
    const own = specifier.startsWith("./") && files.includes(specifier.slice(2));
    const react = specifier === "react" && file.startsWith("react.");
    if (!own && !react) problems.push(`${file} imports "${specifier}"`);
  }
}
if (problems.length > 0) fail(`sdk/dist reaches outside the package:\n  ${problems.join("\n  ")}`);
console.log(`sdk/dist: ${files.length} files from src/client/`);

function fail(message) {
  console.error(message);
  process.exit(1);
}
