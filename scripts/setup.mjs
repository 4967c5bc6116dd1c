#!/usr/bin/env node
// Brings a fresh clone to a runnable state: npm packages, system Chromium
// (where it can be installed), and the native engine. Safe to run repeatedly:
// each step is skipped or incremental when already done.
//
//   node scripts/setup.mjs            debug build (tests, demo)
//   node scripts/setup.mjs --release  optimized build, plus wrk and curl (benchmarks)
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const release = process.argv.includes('--release');
const log = (msg) => process.stderr.write(`[setup] ${msg}\n`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.status !== 0) {
    log(`failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
}

// 1. npm packages.
const lock = join(root, 'package-lock.json');
const marker = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs)) {
  log('installing npm packages');
  // `npm install` rather than `npm ci`: see .ci/run.
  run('npm', ['install', '--no-audit', '--no-fund'], { stdio: ['ignore', 'ignore', 'inherit'] });
}

// 2. Chromium (and, for the benchmarks, wrk and curl) from the system's
// packages when they are missing.
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const hasCommand = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
let aptUpdated = false;
/** apt-get install `pkgs` when this is a root shell with apt; false otherwise. */
function aptInstall(pkgs) {
  if (!isRoot || !hasCommand('apt-get')) return false;
  log(`installing ${pkgs.join(', ')} (apt-get install -y ${pkgs.join(' ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) run('apt-get', ['update', '-qq'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  aptUpdated = true;
  run('apt-get', ['install', '-y', '-qq', ...pkgs], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  return true;
}

const chromiumKnown =
  process.env.ALUVIA_CHROMIUM_PATH ||
  ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => existsSync(p));
if (!chromiumKnown && !aptInstall(['chromium'])) {
  log('Chromium not found; browser features need it (set ALUVIA_CHROMIUM_PATH or install chromium)');
}
// The second browser kind (`browser: 'headless-shell'`), from the same source.
const shellKnown =
  ['/usr/lib/chromium/chromium-headless-shell'].some((p) => existsSync(p)) || hasCommand('chromium-headless-shell');
if (!shellKnown && !aptInstall(['chromium-headless-shell'])) {
  log(
    "Chromium's headless shell not found; the headless-shell browser kind needs it (apt-get install chromium-headless-shell)",
  );
}
if (release) {
  const missing = ['wrk', 'curl'].filter((cmd) => !hasCommand(cmd));
  if (missing.length && !aptInstall(missing)) {
    log(
      `${missing.join(' and ')} not found: the proxy bench falls back to its Node clients (install them for the native figures)`,
    );
  }
}

// 3. The native engine (cargo is incremental: a no-op build takes a second).
log(`building the native engine (${release ? 'release' : 'debug'})`);
const napi = join(root, 'node_modules', '.bin', 'napi');
const args = ['build', '--platform', '--js', 'binding.js', '--dts', 'binding.d.ts'];
if (release) args.push('--release');
run(napi, args, { stdio: ['ignore', 'ignore', 'inherit'] });
execFileSync(process.execPath, ['-e', "require('./lib/native.js')"], { cwd: root, stdio: 'inherit' });

// 4. The native session daemon, beside the engine (see lib/cli/commands.js).
log(`building the session daemon (${release ? 'release' : 'debug'})`);
run('cargo', ['build', '-p', 'aluvia-daemon', ...(release ? ['--release'] : [])], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
installDaemon(join(process.env.CARGO_TARGET_DIR || join(root, 'target'), release ? 'release' : 'debug'), root);

/** Copies `aluvia-daemon` from `from` into `to` by rename, so that a running one is never overwritten. */
function installDaemon(from, to) {
  const tmp = join(to, `.aluvia-daemon.${process.pid}.tmp`);
  copyFileSync(join(from, 'aluvia-daemon'), tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, join(to, 'aluvia-daemon'));
}
