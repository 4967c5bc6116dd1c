import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import * as esm from '../index.mjs';
import { require, root, runCli, cliPath, serve } from './helpers.mjs';
const { platformName } = require('../lib/platform.js');

const cjs = require('../lib/index.js');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

test('ESM import and CJS require expose the same API', () => {
  const names = [
    'AluviaClient',
    'AluviaApi',
    'connect',
    'MissingApiKeyError',
    'InvalidApiKeyError',
    'ApiError',
    'ProxyStartError',
    'ConnectError',
    'startEmulator',
  ];
  for (const name of names) {
    assert.equal(typeof cjs[name], 'function', `require: ${name}`);
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: the test walks every named export
    assert.equal(esm[name], cjs[name], `import: ${name}`);
  }
  assert.equal(require(join(root, pkg.exports['.'].require)), cjs);
});

test('error classes: instanceof, name, message, statusCode', () => {
  const cases = [
    [new cjs.MissingApiKeyError(), 'MissingApiKeyError', 'Aluvia apiKey is required'],
    [new cjs.InvalidApiKeyError('x'), 'InvalidApiKeyError', 'x'],
    [new cjs.ApiError('y', 422), 'ApiError', 'y'],
    [new cjs.ProxyStartError('z'), 'ProxyStartError', 'z'],
    [new cjs.ConnectError('w'), 'ConnectError', 'w'],
  ];
  for (const [err, name, message] of cases) {
    assert.ok(err instanceof Error);
    assert.ok(err instanceof cjs[name]);
    assert.equal(err.name, name);
    assert.equal(err.message, message);
  }
  assert.equal(new cjs.ApiError('y', 422).statusCode, 422);
});

test('the package declares both bins on one entry', () => {
  assert.equal(pkg.bin.aluvia, pkg.bin['aluvia-sdk']);
  assert.equal(join(root, pkg.bin.aluvia), cliPath);
});

test('aluvia emulator prints one JSON line with the exports and stops on SIGTERM', async () => {
  const child = spawn(process.execPath, [cliPath, 'emulator'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  while (!out.includes('\n')) await once(child.stdout, 'data');
  const info = JSON.parse(out.split('\n')[0]);
  assert.match(info.apiBaseUrl, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  assert.equal(info.gatewayHost, '127.0.0.1');
  assert.equal(typeof info.gatewayPort, 'number');
  assert.ok(info.exports.includes(`export ALUVIA_API_KEY=${info.apiKey}`));
  assert.ok(info.exports.includes(`export ALUVIA_API_BASE_URL=${info.apiBaseUrl}`));
  assert.ok(info.exports.includes(`export ALUVIA_GATEWAY_HOST=${info.gatewayHost}`));
  assert.ok(info.exports.includes(`export ALUVIA_GATEWAY_PORT=${info.gatewayPort}`));
  const api = new cjs.AluviaApi({ apiKey: info.apiKey, apiBaseUrl: info.apiBaseUrl });
  assert.ok((await api.geos.list()).length > 0);
  child.kill('SIGTERM');
  const [code] = await once(child, 'close');
  assert.equal(code, 0);
  await assert.rejects(api.geos.list(), cjs.ApiError, 'the emulator stopped');
});

test('aluvia emulator rejects a bad port with one JSON error', async () => {
  const r = await runCli(['emulator', '--port', 'abc']);
  assert.equal(r.code, 1);
  assert.deepEqual(r.json, { error: "Invalid --port: 'abc' must be an integer from 0 to 65535." });
});

// ---------------------------------------------------------------------------
// Installed as a user installs it: the tarballs `npm run pack` writes (the
// debug build here, which the set-up has already made: no second full
// build), installed into an empty project with no cargo on the PATH, and
// used only through that project's node_modules.

/** The PATH without any folder that holds cargo or rustc. */
function pathWithoutRust() {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir && !existsSync(join(dir, 'cargo')) && !existsSync(join(dir, 'rustc')))
    .join(delimiter);
}

/**
 * A package-lock for a project that depends on the two tarballs: the
 * package's own dependencies as this repository's lock pins them (so that
 * `npm ci --offline` installs them from npm's cache, without the network).
 */
function projectLock(mainTarball, platformTarball, platformPkg) {
  const repoLock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
  const packages = {
    '': {
      name: 'aluvia-install-test',
      version: '1.0.0',
      dependencies: { '@aluvia/sdk': `file:${mainTarball}`, [platformPkg.name]: `file:${platformTarball}` },
    },
    'node_modules/@aluvia/sdk': {
      version: pkg.version,
      resolved: `file:${mainTarball}`,
      license: pkg.license,
      dependencies: pkg.dependencies,
      optionalDependencies: pkg.optionalDependencies,
      peerDependencies: pkg.peerDependencies,
      peerDependenciesMeta: pkg.peerDependenciesMeta,
      bin: pkg.bin,
      engines: pkg.engines,
    },
    [`node_modules/${platformPkg.name}`]: {
      version: platformPkg.version,
      resolved: `file:${platformTarball}`,
      cpu: platformPkg.cpu,
      os: platformPkg.os,
      ...(platformPkg.libc ? { libc: platformPkg.libc } : {}),
    },
  };
  // The other platforms' packages, as npm records them: never fetched here,
  // since their os/cpu do not fit this machine.
  for (const name of Object.keys(pkg.optionalDependencies)) {
    if (name === platformPkg.name) continue;
    const sub = JSON.parse(readFileSync(join(root, 'npm', name.replace('@aluvia/sdk-', ''), 'package.json'), 'utf8'));
    packages[`node_modules/${name}`] = {
      version: sub.version,
      resolved: `https://registry.npmjs.org/${name}/-/${name.split('/')[1]}-${sub.version}.tgz`,
      cpu: sub.cpu,
      optional: true,
      os: sub.os,
      ...(sub.libc ? { libc: sub.libc } : {}),
    };
  }
  for (const [key, entry] of Object.entries(repoLock.packages)) {
    if (key && !entry.dev && !entry.devOptional && !entry.optional) packages[key] = entry;
  }
  return { name: 'aluvia-install-test', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

/** Runs `file` (a node_modules/.bin entry) to completion. */
function runBin(file, args, opts) {
  return spawnSync(file, args, { encoding: 'utf8', timeout: 90_000, ...opts });
}

test('installed from its tarballs into an empty project without cargo: bins, require, import, types', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'aluvia-install-'));
  const project = join(work, 'project');
  const sessionsTmp = join(work, 'tmp');
  mkdirSync(project);
  mkdirSync(sessionsTmp);
  const PATH = pathWithoutRust();
  const env = { ...process.env, PATH, TMPDIR: sessionsTmp };
  for (const k of Object.keys(env)) if (k.startsWith('ALUVIA_') && k !== 'ALUVIA_CHROMIUM_PATH') delete env[k];
  const bin = (name) => join(project, 'node_modules', '.bin', name);
  let emulator;
  try {
    const t0 = Date.now();
    const packed = spawnSync(
      process.execPath,
      [join(root, 'scripts', 'pack.mjs'), '--debug', '--out', join(work, 'tarballs')],
      {
        encoding: 'utf8',
        cwd: root,
      },
    );
    assert.equal(packed.status, 0, packed.stderr);
    const { version, platform, tarballs } = JSON.parse(packed.stdout);
    assert.equal(version, pkg.version);
    const [platformTarball, mainTarball] = tarballs.map((x) => x.file);
    const platformPkg = JSON.parse(readFileSync(join(root, 'npm', platform, 'package.json'), 'utf8'));

    await t.test('the tarballs: engine only in the platform package, versions in lockstep', () => {
      const list = (file) => spawnSync('tar', ['tzf', file], { encoding: 'utf8' }).stdout.split('\n');
      assert.deepEqual(
        list(platformTarball).filter((f) => f.endsWith('.node')),
        [`package/aluvia.${platform}.node`],
      );
      const main = list(mainTarball);
      assert.deepEqual(
        main.filter((f) => f.endsWith('.node')),
        [],
        'no binary in the main package',
      );
      for (const f of [
        'package/binding.js',
        'package/index.d.ts',
        'package/bin/aluvia.js',
        'package/lib/cli/table.js',
      ]) {
        assert.ok(main.includes(f), f);
      }
      const packedPkg = JSON.parse(
        spawnSync('tar', ['xzOf', mainTarball, 'package/package.json'], { encoding: 'utf8' }).stdout,
      );
      const platforms = pkg.napi.targets.map((triple) =>
        triple
          .replace('x86_64', 'x64')
          .replace('aarch64', 'arm64')
          .replace(/-unknown-linux-gnu$/, '-linux-gnu')
          .replace(/-apple-darwin$/, '-darwin')
          .replace(/^(\w+)-(linux|darwin)/, '$2-$1'),
      );
      assert.deepEqual(
        packedPkg.optionalDependencies,
        Object.fromEntries(platforms.map((p) => [`@aluvia/sdk-${p}`, pkg.version])),
        'one optional dependency per napi target, at the package version',
      );
      for (const p of platforms) {
        const sub = JSON.parse(readFileSync(join(root, 'npm', p, 'package.json'), 'utf8'));
        assert.equal(sub.version, pkg.version, p);
        assert.equal(sub.main, `aluvia.${p}.node`, p);
      }
      assert.equal(platformPkg.name, `@aluvia/sdk-${platform}`);
    });

    writeFileSync(
      join(project, 'package.json'),
      `${JSON.stringify({ name: 'aluvia-install-test', version: '1.0.0', private: true, dependencies: projectLock(mainTarball, platformTarball, platformPkg).packages[''].dependencies }, null, 2)}\n`,
    );
    writeFileSync(
      join(project, 'package-lock.json'),
      JSON.stringify(projectLock(mainTarball, platformTarball, platformPkg), null, 2),
    );
    assert.notEqual(spawnSync('sh', ['-c', 'command -v cargo'], { env }).status, 0, 'cargo is not on the PATH');
    const installed = spawnSync('npm', ['ci', '--offline', '--no-audit', '--no-fund'], {
      cwd: project,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(installed.status, 0, `${installed.stdout}\n${installed.stderr}`);
    t.diagnostic(`packed and installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    await t.test('aluvia --version and help, through node_modules/.bin', () => {
      for (const name of ['aluvia', 'aluvia-sdk', 'aluvia-mcp']) assert.ok(lstatSync(bin(name)).isSymbolicLink(), name);
      const v = runBin(bin('aluvia'), ['--version'], { cwd: project, env });
      assert.equal(v.status, 0, v.stderr);
      assert.equal(v.stdout, `${pkg.version}\n`);
      const help = runBin(bin('aluvia-sdk'), ['help'], { cwd: project, env });
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, /^Usage: aluvia <command>/);
    });

    await t.test('aluvia emulator, then a session start, get and close against it', async () => {
      emulator = spawn(bin('aluvia'), ['emulator', '--no-site'], {
        cwd: project,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      emulator.stdout.on('data', (c) => (out += c));
      while (!out.includes('\n')) await once(emulator.stdout, 'data');
      const emu = JSON.parse(out.split('\n')[0]);
      const sessionEnv = {
        ...env,
        ALUVIA_API_KEY: emu.apiKey,
        ALUVIA_API_BASE_URL: emu.apiBaseUrl,
        ALUVIA_GATEWAY_HOST: emu.gatewayHost,
        ALUVIA_GATEWAY_PORT: String(emu.gatewayPort),
      };
      const page = await serve((_req, res) => res.end('<title>Installed</title><p>An installed page.</p>'));
      try {
        // Asynchronously: this process serves the page the session opens.
        const cli = async (args) => {
          const child = spawn(bin('aluvia'), args, {
            cwd: project,
            env: sessionEnv,
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let stdout = '';
          child.stdout.on('data', (c) => (stdout += c));
          const [status] = await once(child, 'close');
          return { status, stdout, json: JSON.parse(stdout) };
        };
        const started = await cli(['session', 'start', page.url, '--browser-session', 'installed']);
        assert.equal(started.status, 0, started.stdout);
        assert.equal(started.json.browserSession, 'installed');
        assert.match(started.json.cdpUrl, /^http:\/\/127\.0\.0\.1:\d+/);
        // The session's daemon is the native one the platform package ships.
        assert.equal(
          realpathSync(`/proc/${started.json.pid}/exe`),
          realpathSync(join(project, 'node_modules', '@aluvia', `sdk-${platformName()}`, 'aluvia-daemon')),
        );
        const got = await cli(['session', 'get']);
        assert.equal(got.status, 0, got.stdout);
        assert.equal(got.json.startUrl, page.url);
        assert.equal(got.json.connection.connection_id, started.json.connectionId);
        const closed = await cli(['session', 'close']);
        assert.equal(closed.status, 0, closed.stdout);
        assert.equal(closed.json.message, 'Browser session closed.');
      } finally {
        await page.close();
      }
      emulator.kill('SIGTERM');
      const [code] = await once(emulator, 'close');
      emulator = undefined;
      assert.equal(code, 0);
    });

    await t.test('aluvia-mcp lists its tools', async () => {
      const transport = new StdioClientTransport({
        command: bin('aluvia-mcp'),
        args: [],
        cwd: project,
        env,
        stderr: 'pipe',
      });
      const client = new Client({ name: 'install-test', version: '1.0.0' });
      await client.connect(transport);
      try {
        const { tools } = await client.listTools();
        assert.equal(tools.length, 11);
        assert.ok(tools.some((x) => x.name === 'session_start') && tools.some((x) => x.name === 'profile_list'));
        assert.equal(client.getServerVersion().version, pkg.version);
      } finally {
        await client.close();
      }
    });

    await t.test('require and import, with the engine from the platform package', () => {
      const body = `const emu = await sdk.startEmulator(); await emu.stop();
        const engine = createRequire(process.cwd() + '/').resolve('${platformPkg.name}');
        console.log(JSON.stringify({ client: typeof sdk.AluviaClient, connect: typeof sdk.connect, engine }));`;
      const cjs = runBin(
        process.execPath,
        [
          '-e',
          `const { createRequire } = require('node:module'); const sdk = require('@aluvia/sdk'); (async () => { ${body} })();`,
        ],
        { cwd: project, env },
      );
      const esm = runBin(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { createRequire } from 'node:module'; import * as sdk from '@aluvia/sdk'; ${body}`,
        ],
        { cwd: project, env },
      );
      for (const r of [cjs, esm]) {
        assert.equal(r.status, 0, r.stderr);
        const seen = JSON.parse(r.stdout);
        assert.equal(seen.client, 'function');
        assert.equal(seen.connect, 'function');
        assert.equal(
          seen.engine,
          join(realpathSync(project), 'node_modules', ...platformPkg.name.split('/'), platformPkg.main),
        );
      }
    });

    await t.test("the README's examples type-check against the installed package", () => {
      const readme = readFileSync(join(root, 'README.md'), 'utf8');
      const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
      assert.ok(blocks.length >= 4, 'README has JS examples');
      mkdirSync(join(project, 'examples'));
      blocks.forEach((code, i) => {
        assert.match(code, /from '@aluvia\/sdk'/, `README example ${i + 1} imports what it uses`);
        writeFileSync(join(project, 'examples', `example-${i + 1}.mjs`), code);
      });
      writeFileSync(
        join(project, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            module: 'nodenext',
            moduleResolution: 'nodenext',
            target: 'es2022',
            allowJs: true,
            checkJs: true,
            noEmit: true,
            noImplicitAny: true,
            types: ['node'],
            typeRoots: [join(root, 'node_modules', '@types')],
          },
          include: ['examples/*.mjs'],
        }),
      );
      const tsc = runBin(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--listFiles'], {
        cwd: project,
        env,
      });
      assert.equal(tsc.status, 0, tsc.stdout);
      const installedTypes = join(realpathSync(project), 'node_modules', '@aluvia', 'sdk', 'index.d.ts');
      assert.ok(tsc.stdout.split('\n').includes(installedTypes), 'the types come from the installed package');
    });

    await t.test('without a binary for the platform: one clear message; help and --version still work', () => {
      rmSync(join(project, 'node_modules', ...platformPkg.name.split('/')), { recursive: true, force: true });
      const v = runBin(bin('aluvia'), ['--version'], { cwd: project, env });
      assert.equal(v.stdout, `${pkg.version}\n`);
      assert.equal(runBin(bin('aluvia'), ['session', 'start', '--help'], { cwd: project, env }).status, 0);
      const r = runBin(bin('aluvia'), ['geos'], { cwd: project, env: { ...env, ALUVIA_API_KEY: 'k' } });
      assert.equal(r.status, 1);
      const { error } = JSON.parse(r.stdout);
      assert.match(
        error,
        new RegExp(`^The Aluvia native engine is not available on this platform \\(${platform}\\): `),
      );
      assert.match(error, /npm run build/);
      assert.equal(r.stderr, '', 'no stack trace');
    });
  } finally {
    emulator?.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  }
});
