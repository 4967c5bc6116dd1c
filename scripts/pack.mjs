#!/usr/bin/env node
// Writes the installable tarballs of this machine's platform to one folder:
// the main package (JS, types, bins) and the platform package with the
// native engine (npm/<platform>/ plus its `.node`). Builds the engine first.
//
//   node scripts/pack.mjs                  release build, tarballs in dist/
//   node scripts/pack.mjs --out <dir>      another folder
//   node scripts/pack.mjs --debug          pack the debug build (tests: no second full build)
//
// Prints one JSON line: { version, platform, tarballs: [{ file, bytes }] }.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const debug = argv.includes('--debug');
const outArg = argv.indexOf('--out');
const out = resolve(outArg === -1 ? join(root, 'dist') : argv[outArg + 1]);
const log = (msg) => process.stderr.write(`[pack] ${msg}\n`);

function run(cmd, args, cwd = root) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) {
    log(`failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
  return r.stdout;
}

const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));
const pkg = readJson(join(root, 'package.json'));
const { platformName } = createRequire(import.meta.url)('../lib/platform.js');

const platform = platformName();
const platformDir = join(root, 'npm', platform);
if (!existsSync(join(platformDir, 'package.json'))) {
  log(`no per-platform package for ${platform} (npm/${platform}); napi.targets lists the platforms we ship`);
  process.exit(1);
}

// Versions in lockstep: every platform package and optional dependency.
const problems = [];
for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
  if (version !== pkg.version) problems.push(`optionalDependencies ${name} is ${version}`);
  const dir = join(root, 'npm', name.replace(/^@aluvia\/sdk-/, ''));
  const sub = existsSync(join(dir, 'package.json')) ? readJson(join(dir, 'package.json')) : undefined;
  if (!sub) problems.push(`${name} has no folder under npm/`);
  else if (sub.name !== name || sub.version !== pkg.version) problems.push(`${dir} is ${sub.name}@${sub.version}`);
}
if (problems.length) {
  log(`versions are not in lockstep with ${pkg.version}: ${problems.join('; ')}`);
  process.exit(1);
}

// The engine: `napi build` is incremental, so a debug build already made by
// the set-up costs a second.
log(`building the native engine (${debug ? 'debug' : 'release'})`);
const napiArgs = ['build', '--platform', '--js', 'binding.js', '--dts', 'binding.d.ts'];
if (!debug) napiArgs.push('--release');
run(join(root, 'node_modules', '.bin', 'napi'), napiArgs);
const nodeFile = `${pkg.napi.binaryName}.${platform}.node`;
if (!existsSync(join(root, nodeFile))) {
  log(`the build wrote no ${nodeFile}`);
  process.exit(1);
}

mkdirSync(out, { recursive: true });
const staging = mkdtempSync(join(tmpdir(), 'aluvia-pack-'));
try {
  // The platform package: its folder plus the binary, packed from a copy so
  // that the repository's npm/ never holds a build.
  const stagedPlatform = join(staging, platform);
  cpSync(platformDir, stagedPlatform, { recursive: true });
  copyFileSync(join(root, nodeFile), join(stagedPlatform, nodeFile));
  // The native session daemon ships beside the engine.
  run('cargo', ['build', '-p', 'aluvia-daemon', ...(debug ? [] : ['--release'])]);
  const daemonFrom = join(
    process.env.CARGO_TARGET_DIR || join(root, 'target'),
    debug ? 'debug' : 'release',
    'aluvia-daemon',
  );
  copyFileSync(daemonFrom, join(stagedPlatform, 'aluvia-daemon'));
  chmodSync(join(stagedPlatform, 'aluvia-daemon'), 0o755);
  const files = [
    run('npm', ['pack', '--silent', '--pack-destination', out], stagedPlatform).trim().split('\n').pop(),
    run('npm', ['pack', '--silent', '--pack-destination', out]).trim().split('\n').pop(),
  ];
  const tarballs = files.map((f) => ({ file: join(out, f), bytes: statSync(join(out, f)).size }));
  for (const t of tarballs) log(`${t.file} (${(t.bytes / 1024 / 1024).toFixed(1)} MiB)`);
  process.stdout.write(`${JSON.stringify({ version: pkg.version, platform, tarballs })}\n`);
} finally {
  rmSync(staging, { recursive: true, force: true });
}
