// Long property runs with a random seed (or a given one): the model-based test and the fuzzers of
// test/model.test.ts and test/fuzz.test.ts, with more sequences and cases than CI runs.
//
//   npm run test:long                         # a random seed, 400 model sequences (10× CI), fuzzers scaled alike
//   npm run test:long -- --seed 1234 --runs 2000
//
// On a failure it prints the seed, so that `--seed N` replays the same run (fast-check also prints the
// counterexample and its path).
import { spawnSync } from "node:child_process";

let seed = Math.floor(Math.random() * 2 ** 31);
let runs = 400;
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--seed") seed = Number(argv[++i]);
  else if (argv[i] === "--runs") runs = Number(argv[++i]);
  else files.push(argv[i]);
}
if (!Number.isInteger(seed) || !Number.isInteger(runs) || runs <= 0) {
  console.error("usage: npm run test:long -- [--seed N] [--runs M] [test files]");
  process.exit(2);
}

console.log(`property seed ${seed}, ${runs} model sequences (the fuzzers scaled by the same factor)`);
const result = spawnSync("vitest", ["run", ...(files.length ? files : ["test/model.test.ts", "test/fuzz.test.ts"])], {
  stdio: "inherit",
  env: { ...process.env, PROPERTY_SEED: String(seed), PROPERTY_RUNS: String(runs) },
});
if (result.status !== 0) {
  console.error(`\nFAILED with property seed ${seed}: replay with  npm run test:long -- --seed ${seed} --runs ${runs}`);
}
process.exit(result.status ?? 1);
