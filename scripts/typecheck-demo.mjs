// Type-checks the demo page (demo/) and the SDK it bundles (src/client/) as browser code, with demo/tsconfig.json:
// the DOM library and no Workers types. Every diagnostic counts: the SDK has its own contract types
// (src/client/contract.ts) and reaches none of the Worker's modules, so nothing here pulls in Workers APIs.
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = fileURLToPath(new URL("..", import.meta.url));
const configPath = `${root}demo/tsconfig.json`;
const { config, error } = ts.readConfigFile(configPath, ts.sys.readFile);
if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
const parsed = ts.parseJsonConfigFileContent(config, ts.sys, `${root}demo`);
const program = ts.createProgram(parsed.fileNames, parsed.options);

const diagnostics = [...parsed.errors, ...ts.getPreEmitDiagnostics(program)];
if (diagnostics.length > 0) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" };
  console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
  process.exit(1);
}
