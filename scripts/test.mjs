#!/usr/bin/env node
// The whole suite: the JS lint and format check (biome check), the Rust core
// (cargo test) and the JS surface (node --test), each printing its own
// summary. Exits non-zero when any fails. With test files as arguments, only
// those run.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const only = process.argv.slice(2);

function run(cmd, args) {
  process.stdout.write(`\n$ ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

let ok = true;
if (only.length === 0) {
  ok = run(process.execPath, [join('node_modules', '@biomejs', 'biome', 'bin', 'biome'), 'check', '.']) && ok;
  ok = run('cargo', ['test', '-p', 'aluvia-core', '-p', 'aluvia-emulator']) && ok;
}
const files = only.length
  ? only
  : readdirSync(join(root, '__test__'))
      .filter((f) => f.endsWith('.test.mjs') || f.endsWith('.test.cjs'))
      .sort()
      .map((f) => join('__test__', f));
ok = run(process.execPath, ['--test', '--test-concurrency=1', ...files]) && ok;

// The browser tests once more with the other browser kind (ALUVIA_BROWSER
// reaches in-process clients, the CLI and its daemons alike).
const SHELL_FILES = [
  'browser.test.mjs',
  'connect.test.mjs',
  'detection-vendors.test.mjs',
  'https.test.mjs',
  'isolation.test.mjs',
  'ladder.test.mjs',
  'owner-only.test.mjs',
  'session-daemon.test.mjs',
  'session-lifecycle.test.mjs',
];
if (only.length === 0) {
  const probe = spawnSync(
    process.execPath,
    ['-e', "require('./lib/native.js').sessionBrowser('headless-shell', null, false)"],
    { cwd: root, stdio: 'ignore' },
  );
  if (probe.status === 0) {
    process.env.ALUVIA_BROWSER = 'headless-shell';
    process.stdout.write('\n# the browser tests again, with ALUVIA_BROWSER=headless-shell\n');
    ok =
      run(process.execPath, ['--test', '--test-concurrency=1', ...SHELL_FILES.map((f) => join('__test__', f))]) && ok;
  } else {
    process.stdout.write("\n# skipped: the headless-shell pass (Chromium's headless shell is not installed)\n");
  }
}
process.exit(ok ? 0 : 1);
