// Type-checks the demo page (demo/) and the SDK it bundles (src/client/) as browser code, with demo/tsconfig.json.
// Only their own errors count: the Worker's modules they reach through type-only imports (schemas, errors) pull
// in Workers APIs that clash with the DOM library, and the main `tsc --noEmit` checks those.
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = fileURLToPath(new URL("..", import.meta.url));
const configPath = `${root}demo/tsconfig.json`;
const { config, error } = ts.readConfigFile(configPath, ts.sys.readFile);
if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
const parsed = ts.parseJsonConfigFileContent(config, ts.sys, `${root}demo`);
const program = ts.createProgram(parsed.fileNames, parsed.options);

const browserCode = (fileName) => fileName.startsWith(`${root}demo/`) || fileName.startsWith(`${root}src/client/`);
const diagnostics = [
  ...parsed.errors,
  ...program.getOptionsDiagnostics(),
  ...program.getGlobalDiagnostics(),
  ...program
    .getSourceFiles()
    .filter((file) => browserCode(file.fileName))
    .flatMap((file) => [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]),
];
if (diagnostics.length > 0) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" };
  console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
  process.exit(1);
}
