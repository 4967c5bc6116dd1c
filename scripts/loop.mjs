#!/usr/bin/env node
// Runs one test many times in a row, to show that a race is gone (not part
// of `npm test`). Stops at the first failure and prints that run's output.
//
//   node scripts/loop.mjs [--runs N] <test file> <test name pattern>
//   npm run loop:emulator-sigterm      the emulator's SIGTERM test, 50 runs
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
let runs = 50;
const at = argv.indexOf('--runs');
if (at !== -1) {
  runs = Number(argv[at + 1]);
  argv.splice(at, 2);
}
const [file, pattern] = argv;
if (!file || !pattern || !Number.isInteger(runs) || runs < 1) {
  process.stderr.write('usage: node scripts/loop.mjs [--runs N] <test file> <test name pattern>\n');
  process.exit(2);
}

const started = Date.now();
for (let i = 1; i <= runs; i++) {
  const r = spawnSync(process.execPath, ['--test', `--test-name-pattern=${pattern}`, file], {
    cwd: root,
    encoding: 'utf8',
  });
  // A pattern that matches nothing passes trivially: exactly one test must have run.
  const ran = /^# pass 1$/m.test(r.stdout) && /^# fail 0$/m.test(r.stdout);
  if (r.status !== 0 || !ran) {
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    process.stdout.write(`run ${i} of ${runs} failed${ran ? '' : ' (or did not run exactly one test)'}\n`);
    process.exit(1);
  }
}
process.stdout.write(
  `${runs} of ${runs} runs passed (${((Date.now() - started) / 1000).toFixed(1)} s): ${file} "${pattern}"\n`,
);
