// The daemon launcher and the session daemon's life, driven in this process
// and through the CLI: real daemons (sh, and the CLI's own with Chromium),
// the emulator, pages on loopback, a private TMPDIR. Every process started
// here is stopped, and the sandbox removed, in after().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sdk, serve, require } from './helpers.mjs';
import { Sandbox, processes, descendants, alive, eventually, pageHandler } from './sessions.mjs';

const native = require('../lib/native.js');
const commands = require('../lib/cli/commands.js');

let emu;
let site;
let sb;

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve(pageHandler);
  sb = new Sandbox(emu, 'daemon');
  // The engine finds the lock directory through this process's os.tmpdir().
  process.env.TMPDIR = sb.tmp;
});

after(async () => {
  for (const p of processes().filter((p) => p.args.includes(sb.tmp))) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await sb?.dispose();
  await site?.close();
  await emu?.stop();
});

/** Live processes whose command line names the sandbox (and `tag`). */
const running = (tag) => processes().filter((p) => p.args.includes(sb.tmp) && p.args.includes(tag) && alive(p.pid));

test('a daemon whose ready pipe cannot be read is killed, and no lock names a dead daemon', async () => {
  const name = await native.sessionClaim('garbled', { pid: 0 });
  // More than the launcher takes without a newline; then it would live on.
  const script = `: ${sb.tmp} garbled; head -c 1100000 /dev/zero >&3; sleep 30`;
  await assert.rejects(
    native.daemonSpawn({ name, program: 'sh', args: ['-c', script], env: {}, cwd: sb.tmp }),
    /could not wait for the daemon .*without a newline/,
  );
  await eventually(() => running('garbled').length === 0, { what: 'the daemon to be killed' });
  assert.equal(sb.readLock(name), null);
});

test('not ready in time: the error names the session and its log; the daemon runs on under its lock until closed', async () => {
  const env = { ...sb.env };
  const started = await commands.sessionStart({
    url: `${site.url}/`,
    browserSession: 'sluggish',
    readyTimeoutMs: 1,
    env,
  });
  assert.deepEqual(started, {
    error: 'Browser is still initializing (timeout).',
    browserSession: 'sluggish',
    logFile: sb.logPath('sluggish'),
  });
  // Findable: listed with the daemon's pid, and closed by name.
  const listed = await commands.sessionList({ env });
  assert.equal(listed.count, 1, JSON.stringify(listed));
  const { pid } = listed.sessions[0];
  assert.equal(listed.sessions[0].browserSession, 'sluggish');
  assert.ok(alive(pid));
  assert.notEqual(pid, process.pid);
  await eventually(() => sb.readLock('sluggish')?.ready === true, { what: 'the late daemon to become ready' });
  const tree = descendants(pid);
  const closed = await commands.sessionClose({ browserSession: 'sluggish', env });
  assert.equal(closed.message, 'Browser session closed.');
  assert.ok(!alive(pid));
  await eventually(() => tree.every((p) => !alive(p)), { what: 'its Chromium to exit' });
  assert.equal(sb.readLock('sluggish'), null);
});

test('closing a session this process is still starting waits for its daemon and never signals this process', async () => {
  const name = await native.sessionClaim('handover', { pid: 0 });
  assert.equal(sb.readLock(name).pid, process.pid, 'the claim names the starting process');
  const closing = commands.sessionClose({ browserSession: name, env: sb.env });
  await new Promise((r) => setTimeout(r, 200));
  const starting = native
    .daemonSpawn({
      name,
      program: 'sh',
      args: ['-c', `: ${sb.tmp} handover; sleep 0.5; echo ready >&3; exec sleep 30`],
      env: {},
      cwd: sb.tmp,
    })
    .catch(() => null); // it may be stopped before it is ready
  const closed = await closing;
  assert.equal(closed.browserSession, name);
  assert.equal(closed.message, 'Browser session closed.');
  assert.notEqual(closed.pid, process.pid);
  assert.ok(!alive(closed.pid), 'the daemon is stopped');
  await starting;
  assert.equal(sb.readLock(name), null);
  assert.equal(running('handover').length, 0);
});

/**
 * Waits until the daemon `pid` and the Chromium processes in `tree` are gone;
 * then session `name`'s log must match `log` and its lock be removed.
 */
async function assertStopped(name, pid, tree, log) {
  await eventually(() => !alive(pid), { what: `the daemon of ${name} to stop` });
  await eventually(() => tree.every((p) => !alive(p)), { what: `the Chromium of ${name} to exit` });
  assert.match(sb.log(name), log);
  assert.equal(sb.readLock(name), null);
}

/** Starts session `name` running the script `text`; the CLI's output once the script has logged `script is running`. */
async function startRun(name, text) {
  const cwd = script(`${name}.mjs`, text);
  const r = await sb.cli(['session', 'start', site.url, '--browser-session', name, '--run', `${name}.mjs`], { cwd });
  assert.equal(r.code, 0, r.stdout);
  await eventually(() => sb.log(name).includes('script is running'), { what: `the script of ${name} to run` });
  return r.json;
}

const FOREVER = `await new Promise(() => setInterval(() => {}, 1000));\n`;

/** Writes `name` into the sandbox's scripts folder; its directory. */
function script(name, text) {
  const dir = join(sb.tmp, 'scripts');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), text);
  return dir;
}

test('--run: the start output carries the ready lock, even when the script is already done', async () => {
  const cwd = script('quick.mjs', `console.log('quick', await page.title());\n`);
  const r = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'quick', '--run', 'quick.mjs'], {
    cwd,
  });
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(Object.keys(r.json), [
    'browserSession',
    'pid',
    'startUrl',
    'cdpUrl',
    'connectionId',
    'blockDetection',
    'autoUnblock',
  ]);
  assert.equal(r.json.startUrl, `${site.url}/`);
  assert.match(r.json.cdpUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(typeof r.json.connectionId, 'number');
  await eventually(() => !alive(r.json.pid), { what: 'the --run daemon to exit' });
  assert.match(sb.log('quick'), /quick Local Page/);
  assert.match(sb.log('quick'), /stopped, exit 0/);
  assert.equal(sb.readLock('quick'), null);
});

test('SIGTERM while a --run script runs, and SIGINT: graceful stops, exit 0, lock removed, no Chromium left', async () => {
  const forever = await startRun('forever', `console.log('script is running');\n${FOREVER}`);
  let tree = descendants(forever.pid);
  process.kill(forever.pid, 'SIGTERM');
  await assertStopped('forever', forever.pid, tree, /stopping \(SIGTERM\)[\s\S]*stopped, exit 0/);

  const plain = await sb.cli(['session', 'start', site.url, '--browser-session', 'interrupted']);
  assert.equal(plain.code, 0, plain.stdout);
  tree = descendants(plain.json.pid);
  process.kill(plain.json.pid, 'SIGINT');
  await assertStopped('interrupted', plain.json.pid, tree, /stopping \(SIGINT\)[\s\S]*stopped, exit 0/);
});

test("a --run script's own SIGTERM listener does not keep `session close` from stopping the session gracefully", async () => {
  const listener = await startRun(
    'listener',
    `process.on('SIGTERM', () => console.log('script saw SIGTERM'));\nconsole.log('script is running');\n${FOREVER}`,
  );
  const tree = descendants(listener.pid);
  const closed = await sb.cli(['session', 'close', '--browser-session', 'listener']);
  assert.equal(closed.json.message, 'Browser session closed.', closed.stdout);
  await assertStopped('listener', listener.pid, tree, /stopping \(SIGTERM\)[\s\S]*stopped, exit 0/);
});

test('an error that escapes a --run script stops the session with exit 1', async () => {
  const cwd = script('stray.mjs', `setTimeout(() => { throw new Error('stray error on purpose'); }, 50);\n${FOREVER}`);
  // Without isolation the engine's logger writes a line too (why not isolated).
  const r = await sb.cli(['session', 'start', site.url, '--browser-session', 'stray', '--run', 'stray.mjs'], {
    cwd,
    env: { ALUVIA_BROWSER_ISOLATION: 'none' },
  });
  assert.equal(r.code, 0, r.stdout);
  const tree = descendants(r.json.pid);
  await assertStopped(
    'stray',
    r.json.pid,
    tree,
    /error: Error: stray error on purpose[\s\S]*stopping \(uncaught exception\)[\s\S]*stopped, exit 1/,
  );
  // One writer for the log: the engine's lines (the daemon's, its logger's,
  // the lock writer's) and the JavaScript side's alike, each stamped.
  const lines = sb
    .log('stray')
    .split('\n')
    .filter((l) => l.startsWith('[aluvia]'));
  assert.ok(
    lines.some((l) => l.includes('stray error on purpose')),
    sb.log('stray'),
  );
  // The script's output too, line by line (a stack trace's lines keep their indent).
  for (const l of lines) assert.match(l, /^\[aluvia\] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .*\S/, l);
  assert.ok(
    !sb
      .log('stray')
      .split('\n')
      .some((l) => l.trim() && !l.startsWith('[aluvia]')),
    sb.log('stray'),
  );
});
