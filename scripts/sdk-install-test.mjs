// The SDK as an app gets it (`npm run test:sdk`): build it, `npm pack` it, and in a fresh project in a
// temporary directory `npm install` the tarball with typescript, esbuild and react from the registry (the
// versions this repository pins, so npm's cache usually has them). Then a small TS file that imports both
// entry points is type-checked with `strict` and `types: []` (no Workers types, no Node types), once as
// Node resolves packages and once as a bundler does; compiled and run on Node 22; and bundled for the
// browser by esbuild. Prints one line per step; exits non-zero on the first failure, keeping the directory.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SDK = path.join(ROOT, "sdk");
/** The project's Node 22 (the `node` dev dependency), whatever Node runs this script. */
const NODE22 = path.join(ROOT, "node_modules", ".bin", "node");
const STEP_TIMEOUT_MS = 180_000;
/** Not a dependency of this repository (its tests have no TSX): the types of react-dom/server for the app. */
const TYPES_REACT_DOM = "19.2.3";

const pins = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).devDependencies;
const tmp = mkdtempSync(path.join(os.tmpdir(), "edge-chat-sdk-"));
const app = path.join(tmp, "app");
const startedAt = Date.now();

function run(what, command, args, options = {}) {
  const t = Date.now();
  const result = spawnSync(command, args, {
    cwd: app,
    encoding: "utf8",
    timeout: STEP_TIMEOUT_MS,
    env: { ...process.env, NO_COLOR: "1", npm_config_audit: "false", npm_config_fund: "false" },
    ...options,
  });
  if (result.status !== 0) {
    console.log(`not ok - ${what} (${result.status ?? result.signal})\n${result.stdout}\n${result.stderr}`);
    console.log(`# kept for a look: ${tmp}`);
    process.exit(1);
  }
  console.log(`ok - ${what} (${Date.now() - t} ms)`);
  return result.stdout;
}

function check(what, condition, detail = "") {
  if (!condition) {
    console.log(`not ok - ${what}${detail ? `\n${detail}` : ""}\n# kept for a look: ${tmp}`);
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

// ---- The package ----------------------------------------------------------------------------------------

mkdirSync(app);
run("build sdk/dist", NODE22, [path.join(ROOT, "scripts", "build-sdk.mjs")], { cwd: ROOT });
const [packed] = JSON.parse(run("npm pack", "npm", ["pack", "--json", "--pack-destination", tmp], { cwd: SDK }));
const shipped = packed.files.map((f) => f.path).sort();
check(
  "the tarball holds dist/, package.json and README.md only",
  shipped.every((f) => f.startsWith("dist/") || f === "package.json" || f === "README.md") &&
    shipped.includes("dist/index.d.ts") &&
    shipped.includes("dist/react.d.ts"),
  shipped.join("\n"),
);
const manifest = JSON.parse(readFileSync(path.join(SDK, "package.json"), "utf8"));
check("no runtime dependencies", manifest.dependencies === undefined, JSON.stringify(manifest.dependencies));

// ---- A fresh app that installs it ---------------------------------------------------------------------

writeFileSync(
  path.join(app, "package.json"),
  JSON.stringify(
    {
      name: "edge-chat-sdk-app",
      private: true,
      type: "module",
      dependencies: {
        "edge-chat-client": `file:${path.join(tmp, packed.filename)}`,
        react: pins.react,
        "react-dom": pins["react-dom"],
      },
      devDependencies: {
        "@types/react": pins["@types/react"],
        "@types/react-dom": TYPES_REACT_DOM,
        esbuild: pins.esbuild,
        typescript: pins.typescript,
      },
    },
    null,
    2,
  ),
);
const compilerOptions = {
  strict: true,
  types: [],
  target: "ES2022",
  lib: ["ES2022", "DOM", "DOM.Iterable"],
  module: "NodeNext",
  moduleResolution: "NodeNext",
  skipLibCheck: false,
  noUncheckedIndexedAccess: true,
  outDir: "out",
};
writeFileSync(path.join(app, "tsconfig.json"), JSON.stringify({ compilerOptions, include: ["src"] }, null, 2));
mkdirSync(path.join(app, "src"));
writeFileSync(path.join(app, "src", "main.ts"), appSource());

run("npm install the tarball, react, typescript and esbuild", "npm", [
  "install",
  "--prefer-offline",
  "--no-audit",
  "--no-fund",
]);
const tsc = path.join(app, "node_modules", "typescript", "bin", "tsc");
run("type-check and compile as Node resolves (NodeNext, strict, types: [])", NODE22, [tsc, "-p", "."]);
// The libraries' own declarations were checked by the step above: this one is about resolving the package.
run("type-check as a bundler resolves (Bundler, strict, types: [])", NODE22, [
  tsc,
  "-p",
  ".",
  "--noEmit",
  "--skipLibCheck",
  "--module",
  "ESNext",
  "--moduleResolution",
  "Bundler",
]);
const output = run("run it on Node 22", NODE22, [path.join(app, "out", "main.js")]);
check("it ran every check", output.includes("sdk app: all checks passed"), output);
const esbuild = path.join(app, "node_modules", ".bin", "esbuild");
run("bundle it for the browser with esbuild", esbuild, [
  "src/main.ts",
  "--bundle",
  "--format=esm",
  "--platform=browser",
  "--target=es2022",
  "--minify",
  "--outfile=out/browser.js",
  "--log-level=warning",
]);
const bundle = readFileSync(path.join(app, "out", "browser.js"), "utf8");
check(
  "the browser bundle has no Node built-in and none of the server's libraries",
  !/["']node:/.test(bundle) && !/\bzod\b|hono|cloudflare:/.test(bundle),
);
console.log(
  `# browser bundle (SDK, React, ReactDOMServer, the checks): ${(bundle.length / 1024).toFixed(0)} KiB minified`,
);

rmSync(tmp, { recursive: true, force: true });
console.log(`# sdk install test passed in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);

/** The app: typed uses of both entry points, run as checks. Its types must be the SDK's own (not any). */
function appSource() {
  return `import {
  ChatApiError,
  ChatClient,
  type Conversation,
  ConversationList,
  type InboxFrame,
  LiveConversation,
  type Message,
  mergeConversation,
  messageStatus,
  type ServerFrame,
} from "edge-chat-client";
import { useConversation, useConversationList, usePresence, useReceipts, useTyping } from "edge-chat-client/react";
import { createElement } from "react";
import { renderToString } from "react-dom/server";

function check(what: string, ok: boolean): void {
  if (!ok) throw new Error(\`failed: \${what}\`);
}

// The types are the SDK's, strict: each of these lines is an error, and tsc fails if one is not.
// @ts-expect-error seq is a number
const badSeq: Message["seq"] = "1";
// @ts-expect-error a frame type the contract does not have
const badFrame: ServerFrame["type"] = "hello";
// @ts-expect-error an inbox frame is not a conversation socket frame
const notInbox: InboxFrame = { type: "ready" };
void [badSeq, badFrame, notInbox];

const at = "2026-11-25T12:00:00.000Z";
const conversation: Conversation = {
  id: "c1",
  title: "Lunch",
  direct: false,
  createdBy: "alice",
  createdAt: at,
  updatedAt: at,
  rev: 2,
  lastSeq: 1,
  lastMessage: { seq: 1, senderId: "alice", preview: "Noon?", createdAt: at },
  participants: [
    { userId: "alice", role: "owner", joinedAt: at, lastReadSeq: 1, lastDeliveredSeq: 1 },
    { userId: "bob", role: "member", joinedAt: at, lastReadSeq: 0, lastDeliveredSeq: 1 },
  ],
  unreadCount: 0,
};

// REST through a fetch of our own: the requests it makes, and the answers typed.
const asked: string[] = [];
const client = new ChatClient({
  baseUrl: "https://chat.example/",
  token: async () => "a-token",
  fetch: async (request: Request) => {
    asked.push(\`\${request.method} \${new URL(request.url).pathname}\${new URL(request.url).search} \${request.headers.get("Authorization")}\`);
    if (request.url.endsWith("/missing")) {
      return Response.json({ error: { code: "not_found", message: "Not found" } }, { status: 404 });
    }
    return Response.json({ conversations: [conversation], nextCursor: null });
  },
});
const page = await client.listConversations({ limit: 5 });
const first: Conversation | undefined = page.conversations[0];
check("a page of the list", first?.id === "c1" && page.nextCursor === null);
check("the request", asked[0] === "GET /v1/conversations?limit=5 Bearer a-token");
const refused = await client.getConversation("missing").catch((err: unknown) => err);
check("a ChatApiError", refused instanceof ChatApiError && refused.code === "not_found" && !refused.retryable);

// The merge rule and the status of a message.
const newer = { ...conversation, rev: 3, lastSeq: 2, unreadCount: 1 };
check("merge: the higher rev wins", mergeConversation([conversation], newer, "alice")[0]?.lastSeq === 2);
check("status: delivered, not read", messageStatus({ seq: 1, senderId: "alice" }, conversation.participants, {}) === "delivered");
check("the stores are exported", typeof ConversationList === "function" && typeof LiveConversation === "function");

// Only the entry points are exported.
const internal: string = "edge-chat-client/dist/rest.js";
check("internal files are not importable", await import(internal).then(() => false, () => true));

// The hooks, rendered on the server: empty state, and nothing opened (their stores are made in effects).
function App() {
  const list = useConversationList(client);
  const chat = useConversation(client, "c1");
  const typing = useTyping(chat);
  const online = usePresence(chat);
  const { statusOf } = useReceipts(chat);
  const status: "sent" | "delivered" | "read" = statusOf({ seq: 1, senderId: "alice" });
  return createElement("p", null, [list.conversations.length, chat.messages.length, chat.status, typing.length, online.length, status].join(" "));
}
const html = renderToString(createElement(App));
check("the hooks render on the server", html === "<p>0 0 connecting 0 0 sent</p>");
check("no request was made by rendering", asked.length === 2);
console.log("sdk app: all checks passed");
`;
}
