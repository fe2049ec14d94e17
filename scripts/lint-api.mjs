// `npm run lint:api`: lints the API's two documents as the Worker serves them: /openapi.json with Redocly's CLI
// (redocly.yaml), /asyncapi.json with the AsyncAPI parser. Any error or warning fails.
//
// No server: test/api-docs.test.ts fetches both documents through the Worker's fetch handler and hands them
// over in its task's `meta`, which vitest's JSON report carries out of workerd.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Parser } from "@asyncapi/parser";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => join(root, "node_modules", ".bin", name);
const TIMEOUT_MS = 5 * 60_000;

/** Runs a tool of node_modules/.bin to its end (or the timeout); its output is shown unless captured. */
function run(name, args, { capture = false, env = {} } = {}) {
  const result = spawnSync(bin(name), args, {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: "utf8",
    stdio: capture ? ["ignore", "pipe", "inherit"] : "inherit",
    timeout: TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error) throw result.error;
  return result;
}

/** Both documents, from the export test of test/api-docs.test.ts. */
function exportDocuments(dir) {
  const report = join(dir, "vitest.json");
  const { status } = run("vitest", [
    "run",
    "test/api-docs.test.ts",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${report}`,
  ]);
  if (status !== 0) throw new Error(`test/api-docs.test.ts failed (exit ${status})`);
  const results = JSON.parse(readFileSync(report, "utf8")).testResults.flatMap((file) => file.assertionResults);
  const documents = results.find((test) => test.meta?.apiDocuments)?.meta.apiDocuments;
  if (!documents?.openapi || !documents?.asyncapi) throw new Error("the export test handed over no documents");
  return documents;
}

/** Redocly's problems of the OpenAPI document, printed; how many there are. */
function lintOpenApi(path) {
  const { status, stdout } = run("redocly", ["lint", path, "--config", join(root, "redocly.yaml"), "--format=json"], {
    capture: true,
    // No telemetry and no update check: CI has no network, and a lint should not need one.
    env: { REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
  });
  const { totals, problems } = JSON.parse(stdout);
  for (const p of problems) console.log(`  ${p.severity} ${p.ruleId} at ${p.location[0]?.pointer}: ${p.message}`);
  console.log(`openapi.json: ${totals.errors} errors, ${totals.warnings} warnings (redocly, exit ${status})`);
  return totals.errors + totals.warnings + (status === 0 ? 0 : 1);
}

// The parser's severities: 0 error, 1 warning, 2 information, 3 hint.
const SEVERITY = ["error", "warning", "info", "hint"];

/** The AsyncAPI parser's diagnostics of the document, printed; how many are errors or warnings. */
async function lintAsyncApi(path) {
  const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"));
  for (const d of diagnostics) {
    console.log(`  ${SEVERITY[d.severity]} ${d.code} at ${d.path.join(".") || "(root)"}: ${d.message}`);
  }
  const failing = diagnostics.filter((d) => d.severity <= 1).length;
  console.log(
    `asyncapi.json: ${failing} errors and warnings, ${diagnostics.length - failing} notes (@asyncapi/parser)`,
  );
  // No document at all (unparseable, or unresolvable) is a failure even without a diagnostic.
  return failing + (document ? 0 : 1);
}

const dir = mkdtempSync(join(tmpdir(), "api-docs-"));
let problems = 1;
try {
  const { openapi, asyncapi } = exportDocuments(dir);
  const openapiPath = join(dir, "openapi.json");
  const asyncapiPath = join(dir, "asyncapi.json");
  writeFileSync(openapiPath, JSON.stringify(openapi, null, 2));
  writeFileSync(asyncapiPath, JSON.stringify(asyncapi, null, 2));
  problems = lintOpenApi(openapiPath) + (await lintAsyncApi(asyncapiPath));
} finally {
  // Kept when something is wrong, to be read.
  if (problems === 0) rmSync(dir, { recursive: true, force: true });
  else console.error(`lint:api: the documents are in ${dir}`);
}
process.exit(problems === 0 ? 0 : 1);
