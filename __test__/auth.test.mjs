// `aluvia auth`: the device-code login against the emulator, the private
// config file, and the key taken from it by the CLI, the MCP server and a
// session daemon when ALUVIA_API_KEY is not set.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  mkdtempSync,
  rmSync,
  readFileSync,
  writeFileSync,
  mkdirSync,
  statSync,
  chmodSync,
  existsSync,
  chownSync,
  lchownSync,
  lstatSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sdk, root, cliPath, admin, serve, require, eventually, throwawayUser } from './helpers.mjs';

const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const native = require('../lib/native.js');

const NO_KEY = 'No API key found. Run `aluvia auth` to log in, or set ALUVIA_API_KEY.';

let emu;
const homes = [];
/** Every `aluvia auth` started: none may outlive the tests. */
const logins = [];

before(async () => {
  emu = await sdk.startEmulator({ site: false, authInterval: 1 });
});

after(async () => {
  for (const child of logins) if (child.exitCode === null) child.kill('SIGKILL');
  await emu?.stop();
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});

/** A fresh HOME (also the TMPDIR of the sessions), removed after the tests. */
function newHome() {
  const home = mkdtempSync(join(tmpdir(), 'aluvia-auth-'));
  homes.push(home);
  return home;
}

const configFile = (home) => join(home, '.aluvia', 'config.json');
const mode = (path) => statSync(path).mode & 0o777;

/** The environment of a CLI run in `home`: no ALUVIA_API_KEY at all unless `extra` sets one. */
function envFor(home, extra = {}) {
  const env = { ...process.env, HOME: home, TMPDIR: home, ALUVIA_API_BASE_URL: emu.apiBaseUrl, ...extra };
  if (!('ALUVIA_API_KEY' in extra)) delete env.ALUVIA_API_KEY;
  return env;
}

/** Runs the CLI with exactly `env` (runCli merges process.env, which may hold a key). */
function cli(args, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => {
      let json;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/** Starts `aluvia auth`; resolves once it showed its code: `{ userCode, url, done }`. */
async function startLogin(env) {
  const child = spawn(process.execPath, [cliPath, 'auth'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  logins.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const done = new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr, json: stdout ? JSON.parse(stdout) : undefined })),
  );
  await eventually(() => /code: [A-Z0-9]{4}-[A-Z0-9]{4}/.test(stderr), { what: 'the login code on stderr' });
  const userCode = stderr.match(/code: ([A-Z0-9]{4}-[A-Z0-9]{4})/)[1];
  const url = stderr.match(/(http:\/\/\S+)/)[1];
  assert.equal(stdout, '', 'stdout keeps its one JSON object for the end');
  return { userCode, url, done, child, stderr: () => stderr };
}

async function loginState(userCode) {
  const { body } = await admin(emu, 'GET', '/_emulator/auth');
  return body.logins.find((l) => l.userCode === userCode);
}

async function loginCount() {
  return (await admin(emu, 'GET', '/_emulator/auth')).body.logins.length;
}

/** Logs in through the emulator's approval page, as a browser would. */
async function logIn(home) {
  const login = await startLogin(envFor(home));
  const page = await fetch(login.url);
  assert.equal(page.status, 200);
  const r = await login.done;
  assert.equal(r.code, 0, r.stdout);
  return r;
}

test('the whole flow: pending, approved, saved privately; status from env and file; logout', {
  timeout: 60_000,
}, async () => {
  const home = newHome();
  const env = envFor(home);
  const file = configFile(home);
  assert.deepEqual((await cli(['auth', 'status'], env)).json, { authenticated: false, source: null, configFile: file });
  assert.deepEqual((await cli(['account'], env)).json, { error: NO_KEY });

  const login = await startLogin(env);
  assert.ok(login.url.endsWith(login.userCode), login.url);
  // Pending: it keeps polling, once a second, and saves nothing.
  await eventually(async () => (await loginState(login.userCode))?.polls.length >= 2, { what: 'two polls' });
  const pending = await loginState(login.userCode);
  assert.equal(pending.status, 'pending');
  const [first, second] = pending.polls;
  assert.ok(second - first >= 900, `polls ${pending.polls}`);
  assert.equal(login.child.exitCode, null);
  assert.equal(existsSync(file), false);

  const approved = await admin(emu, 'POST', '/_emulator/auth/approve', { userCode: login.userCode });
  assert.equal(approved.status, 200);
  const r = await login.done;
  assert.equal(r.code, 0, r.stdout);
  assert.equal(r.stdout.trim().split('\n').length, 1);
  assert.deepEqual(r.json, { status: 'logged_in', configFile: file });
  assert.ok(!r.stdout.includes(emu.apiKey) && !r.stderr.includes(emu.apiKey), 'the key is never printed');
  assert.equal(mode(join(home, '.aluvia')), 0o700);
  assert.equal(mode(file), 0o600);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { apiKey: emu.apiKey });

  const fromFile = await cli(['auth', 'status'], env);
  assert.deepEqual(fromFile.json, { authenticated: true, source: 'config', configFile: file });
  const fromEnv = await cli(['auth', 'status'], envFor(home, { ALUVIA_API_KEY: 'emu_from_env' }));
  assert.deepEqual(fromEnv.json, { authenticated: true, source: 'env', configFile: file });
  assert.ok(!fromFile.stdout.includes(emu.apiKey) && !fromEnv.stdout.includes('emu_from_env'));
  // Commands use the file's key; the environment's wins when set.
  assert.equal((await cli(['account'], env)).json.account.account_id, 1);
  const wrongEnv = await cli(['account'], envFor(home, { ALUVIA_API_KEY: 'emu_wrong' }));
  assert.match(wrongEnv.json.error, /^Authentication failed \(HTTP 401\)/);

  // Every write puts the modes back.
  chmodSync(join(home, '.aluvia'), 0o755);
  chmodSync(file, 0o644);
  await logIn(home);
  assert.equal(mode(join(home, '.aluvia')), 0o700);
  assert.equal(mode(file), 0o600);

  assert.deepEqual((await cli(['auth', 'logout'], env)).json, { status: 'logged_out', configFile: file });
  assert.equal(existsSync(file), false);
  assert.deepEqual((await cli(['auth', 'logout'], env)).json, { status: 'not_logged_in', configFile: file });
  assert.deepEqual((await cli(['account'], env)).json, { error: NO_KEY });
  const unknown = await cli(['auth', 'bogus'], env);
  assert.equal(unknown.code, 1);
  assert.deepEqual(unknown.json, { error: "Unknown auth subcommand: 'bogus'." });
});

test('slow_down makes the CLI wait 5 s longer between polls', { timeout: 30_000 }, async () => {
  const home = newHome();
  const login = await startLogin(envFor(home));
  await admin(emu, 'POST', '/_emulator/auth/slow-down', { userCode: login.userCode, count: 1 });
  await admin(emu, 'POST', '/_emulator/auth/approve', { userCode: login.userCode });
  const r = await login.done;
  assert.equal(r.code, 0, r.stdout);
  const { polls, interval } = await loginState(login.userCode);
  assert.equal(interval, 6);
  // Polls a second apart until one is answered slow_down, then one more
  // 1 + 5 s later, which gets the key. (A client that ignored slow_down
  // would be answered slow_down again and again, and never get it.)
  const gaps = polls.slice(1).map((p, i) => p - polls[i]);
  assert.ok(gaps.at(-1) >= 5_700, `polls ${polls}`);
  assert.ok(
    gaps.slice(0, -1).every((g) => g >= 900 && g < 2_000),
    `polls ${polls}`,
  );
  assert.ok(existsSync(configFile(home)));
});

test('denied and expired logins end with their error and save nothing', { timeout: 60_000 }, async () => {
  const home = newHome();
  for (const [action, error] of [
    ['deny', 'The login was denied.'],
    ['expire', 'The login code expired. Run `aluvia auth` again.'],
  ]) {
    const login = await startLogin(envFor(home));
    await admin(emu, 'POST', `/_emulator/auth/${action}`, { userCode: login.userCode });
    const r = await login.done;
    assert.equal(r.code, 1, action);
    assert.deepEqual(r.json, { error }, action);
    assert.equal(existsSync(configFile(home)), false, action);
  }
});

test('a key that fails GET /account is not saved', { timeout: 60_000 }, async () => {
  const home = newHome();
  const login = await startLogin(envFor(home));
  await admin(emu, 'POST', '/_emulator/auth/approve', { userCode: login.userCode, apiKey: 'emu_not_a_real_key' });
  const r = await login.done;
  assert.equal(r.code, 1);
  assert.match(
    r.json.error,
    /^The API key from the login did not work \(Authentication failed \(HTTP 401\).*nothing was saved\.$/,
  );
  assert.ok(!r.stdout.includes('emu_not_a_real_key') && !r.stderr.includes('emu_not_a_real_key'));
  assert.equal(existsSync(join(home, '.aluvia')), false);
});

test('a config file that is not JSON or not ours is refused and left untouched', { timeout: 60_000 }, async () => {
  const home = newHome();
  const file = configFile(home);
  mkdirSync(join(home, '.aluvia'), { mode: 0o700 });
  for (const [content, why] of [
    ['apiKey = "abc"\n', 'is not valid JSON'],
    ['{"profile": "work"}\n', 'is not an Aluvia config (no apiKey)'],
  ]) {
    writeFileSync(file, content, { mode: 0o644 });
    const env = envFor(home);
    const logins = await loginCount();
    for (const args of [['auth'], ['auth', 'status'], ['auth', 'logout'], ['account']]) {
      const r = await cli(args, env);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(
        r.json.error,
        `The config file ${file} ${why}; it was left untouched. Move it away and run \`aluvia auth\` again.`,
        args.join(' '),
      );
    }
    assert.equal(await loginCount(), logins, 'no login was started');
    assert.equal(readFileSync(file, 'utf8'), content);
    assert.equal(mode(file), 0o644);
    // ALUVIA_API_KEY still works next to it.
    const withEnv = await cli(['account'], envFor(home, { ALUVIA_API_KEY: emu.apiKey }));
    assert.equal(withEnv.json.account.account_id, 1);
  }
});

test('the MCP server takes the key from the config file alone', { timeout: 60_000 }, async () => {
  const home = newHome();
  const connect = async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [join(root, 'bin', 'aluvia-mcp.js')],
      env: envFor(home),
      stderr: 'pipe',
    });
    const client = new Client({ name: 'aluvia-test', version: '1.0.0' });
    await client.connect(transport);
    return client;
  };
  const account = async () => {
    const client = await connect();
    try {
      const res = await client.callTool({ name: 'account_get', arguments: {} });
      return { isError: Boolean(res.isError), json: JSON.parse(res.content[0].text) };
    } finally {
      await client.close();
    }
  };
  assert.deepEqual(await account(), { isError: true, json: { error: NO_KEY } });
  await logIn(home);
  const r = await account();
  assert.equal(r.isError, false);
  assert.equal(r.json.account.account_id, 1);
});

test('a session daemon takes the key from the config file alone', { timeout: 60_000 }, async () => {
  const home = newHome();
  await logIn(home);
  const site = await serve((_req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end('<title>Plain</title><p>A calm page about nothing in particular.</p>');
  });
  const env = envFor(home, {
    ALUVIA_GATEWAY_HOST: emu.gatewayHost,
    ALUVIA_GATEWAY_PORT: String(emu.gatewayPort),
    // Chromium is found from the real HOME; the test's HOME is empty.
    ALUVIA_CHROMIUM_PATH: native.sessionBrowser(null, null, false).path,
  });
  try {
    const started = await cli(['session', 'start', `${site.url}/`, '--browser-session', 'from-file'], env);
    assert.equal(started.code, 0, started.stdout);
    assert.equal(typeof started.json.connectionId, 'number', 'the daemon created a connection with the saved key');
    const got = await cli(['session', 'get'], env);
    assert.equal(got.json.connection.connection_id, started.json.connectionId);
    const lock = readFileSync(join(home, 'aluvia-sdk', 'cli-from-file.lock'), 'utf8');
    const log = readFileSync(join(home, 'aluvia-sdk', 'cli-from-file.log'), 'utf8');
    assert.ok(!lock.includes(emu.apiKey) && !log.includes(emu.apiKey), 'the key is in neither the lock nor the log');
  } finally {
    const closed = await cli(['session', 'close', '--all'], env);
    assert.equal(closed.code, 0, closed.stdout);
    await site.close();
  }
});

test('aluvia emulator --auto-approve approves every login at once', { timeout: 60_000 }, async () => {
  const home = newHome();
  const child = spawn(process.execPath, [cliPath, 'emulator', '--no-site', '--auto-approve'], {
    cwd: root,
    env: envFor(home),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    await eventually(() => out.includes('\n'), { what: 'the emulator JSON line' });
    const { apiBaseUrl } = JSON.parse(out);
    const started = Date.now();
    const r = await cli(['auth'], envFor(home, { ALUVIA_API_BASE_URL: apiBaseUrl }));
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.json.status, 'logged_in');
    assert.ok(Date.now() - started < 15_000);
    assert.equal(
      (await cli(['account'], envFor(home, { ALUVIA_API_BASE_URL: apiBaseUrl }))).json.account.account_id,
      1,
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('close', resolve)));
  }
});

// ---------------------------------------------- the config folder's safety

/** A throwaway local user, made on first use and removed after the tests. */
let otherUser;
const theOtherUser = () => {
  otherUser ??= throwawayUser();
  return otherUser;
};
after(() => otherUser?.remove?.());

/** Runs the CLI like cli(), killed after `limitMs`: adds how long it took (`ms`) and `killed`. */
function timedCli(args, env, limitMs = 15_000) {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    logins.push(child);
    let stdout = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, limitMs);
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => {
      clearTimeout(timer);
      let json;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json, killed, ms: Date.now() - started });
    });
  });
}

/**
 * Runs `aluvia auth` to its end. A login it starts is approved at once, so
 * that a build which should have refused shows what it would have written.
 */
async function authToEnd(env) {
  const child = spawn(process.execPath, [cliPath, 'auth'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  logins.push(child);
  let stdout = '';
  let stderr = '';
  let ended = false;
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const done = new Promise((resolve) =>
    child.on('close', (code) => {
      ended = true;
      let json;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    }),
  );
  await eventually(() => ended || /code: [A-Z0-9]{4}-[A-Z0-9]{4}/.test(stderr), { what: 'a refusal or a login code' });
  const shown = stderr.match(/code: ([A-Z0-9]{4}-[A-Z0-9]{4})/);
  if (shown) await admin(emu, 'POST', '/_emulator/auth/approve', { userCode: shown[1] });
  return done;
}

/** What is at `path` and, for a folder, in it: type, mode, owner, content or link target. */
function snapshot(path) {
  const one = (p) => {
    const s = lstatSync(p);
    const what = s.isSymbolicLink() ? `-> ${readlinkSync(p)}` : s.isFile() ? readFileSync(p, 'utf8') : '';
    return `${p} ${s.mode.toString(8)} ${s.uid} ${what}`;
  };
  const all = [one(path)];
  if (lstatSync(path).isDirectory())
    all.push(
      ...readdirSync(path)
        .sort()
        .map((n) => one(join(path, n))),
    );
  return all;
}

/** `{home}/.aluvia/config.json` holding the emulator's key, folder 0700 and file 0600 whatever the umask. */
function savedConfig(home) {
  const dir = join(home, '.aluvia');
  mkdirSync(dir, { mode: 0o700 });
  chmodSync(dir, 0o700);
  writeFileSync(configFile(home), `${JSON.stringify({ apiKey: emu.apiKey })}\n`);
  chmodSync(configFile(home), 0o600);
  return { dir, file: configFile(home) };
}

/**
 * Every way the key file is used ends at once with exactly `error`, having
 * changed nothing under `watched`: `aluvia auth` first (which would
 * otherwise log in and write), then the commands that read the key.
 */
async function everyUseRefused(home, error, watched, extraEnv = {}) {
  const env = envFor(home, extraEnv);
  const before = snapshot(watched);
  const loginsBefore = await loginCount();
  const started = Date.now();
  const login = await authToEnd(env);
  assert.deepEqual(snapshot(watched), before, 'aluvia auth changed nothing');
  assert.equal(login.code, 1, login.stdout);
  assert.deepEqual(login.json, { error }, 'auth');
  assert.ok(Date.now() - started < 5_000, `auth took ${Date.now() - started} ms`);
  assert.equal(await loginCount(), loginsBefore, 'no login was started');
  for (const args of [['account'], ['session', 'list'], ['auth', 'status'], ['auth', 'logout']]) {
    const r = await timedCli(args, env);
    assert.equal(r.killed, false, `${args.join(' ')} hung`);
    assert.ok(r.ms < 5_000, `${args.join(' ')} took ${r.ms} ms`);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.deepEqual(r.json, { error }, args.join(' '));
  }
  assert.deepEqual(snapshot(watched), before, 'nothing changed');
}

test("as root with another user's HOME, a link planted as ~/.aluvia is not followed", {
  timeout: 120_000,
}, async (t) => {
  const user = theOtherUser();
  if (user.skip) return t.skip(user.skip);
  // Their home, and a folder of someone else's (root's) the link points at.
  const home = newHome();
  chownSync(home, user.uid, user.uid);
  const target = newHome();
  chmodSync(target, 0o755);
  writeFileSync(join(target, 'keep.txt'), 'keep\n', { mode: 0o644 });
  const link = join(home, '.aluvia');
  symlinkSync(target, link);
  lchownSync(link, user.uid, user.uid);

  await everyUseRefused(home, `Refusing to use ${link}: it is a symlink.`, target);
  assert.equal(mode(target), 0o755, "the link's target was not chmodded");
  assert.deepEqual(readdirSync(target), ['keep.txt'], 'no config.json nor temp file was written there');
  assert.ok(lstatSync(link).isSymbolicLink());
  // ALUVIA_API_KEY still works: the file is not looked at.
  const withEnv = await cli(['account'], envFor(home, { ALUVIA_API_KEY: emu.apiKey }));
  assert.equal(withEnv.json.account.account_id, 1);
});

test('a link planted as config.json is not followed', { timeout: 120_000 }, async () => {
  const home = newHome();
  const { dir, file } = savedConfig(home);
  const elsewhere = newHome();
  const target = join(elsewhere, 'theirs.json');
  writeFileSync(target, `${JSON.stringify({ apiKey: emu.apiKey })}\n`, { mode: 0o600 });
  rmSync(file);
  symlinkSync(target, file);
  await everyUseRefused(home, `Refusing to use ${file}: it is a symlink.`, dir);
  assert.equal(readFileSync(target, 'utf8'), `${JSON.stringify({ apiKey: emu.apiKey })}\n`);
  assert.equal(mode(target), 0o600);
});

test('a FIFO at config.json fails every command at once, naming it', { timeout: 180_000 }, async () => {
  const home = newHome();
  const { dir, file } = savedConfig(home);
  rmSync(file);
  const made = spawnSync('mkfifo', ['-m', '600', file]);
  assert.equal(made.status, 0, String(made.stderr));
  await everyUseRefused(home, `Refusing to use ${file}: it is not a regular file (a FIFO).`, dir);
  assert.ok(lstatSync(file).isFIFO());
});

test('a config folder or file writable by group or others is refused and left alone', {
  timeout: 120_000,
}, async () => {
  const home = newHome();
  const { dir, file } = savedConfig(home);
  chmodSync(file, 0o664);
  await everyUseRefused(
    home,
    `Refusing to use ${file}: it is writable by group or others (mode 0664). Run chmod 600 ${file}.`,
    dir,
  );
  assert.equal(mode(file), 0o664);
  chmodSync(file, 0o600);
  chmodSync(dir, 0o777);
  await everyUseRefused(
    home,
    `Refusing to use ${dir}: it is writable by group or others (mode 0777). Run chmod 700 ${dir}.`,
    dir,
  );
  assert.equal(mode(dir), 0o777);
});

test('a config folder or file owned by another user is refused and left alone', { timeout: 120_000 }, async (t) => {
  const user = theOtherUser();
  if (user.skip) return t.skip(user.skip);
  const me = process.geteuid();
  const ownedBy = (path) => `Refusing to use ${path}: it is owned by uid ${user.uid}, not by you (uid ${me}).`;
  // A file of theirs in a folder of ours.
  const home = newHome();
  const { dir, file } = savedConfig(home);
  chownSync(file, user.uid, user.uid);
  await everyUseRefused(home, ownedBy(file), dir);
  // Their whole ~/.aluvia, as when root runs with their HOME.
  const theirs = newHome();
  const saved = savedConfig(theirs);
  for (const p of [theirs, saved.dir, saved.file]) chownSync(p, user.uid, user.uid);
  await everyUseRefused(theirs, ownedBy(saved.dir), saved.dir);
  assert.equal(lstatSync(saved.file).uid, user.uid);
  assert.equal(readFileSync(saved.file, 'utf8'), `${JSON.stringify({ apiKey: emu.apiKey })}\n`);
});
