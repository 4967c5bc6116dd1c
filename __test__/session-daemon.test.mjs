// The daemon launcher and the lock-file calls of the engine, driven in this
// process: real daemons (sh, and the CLI's own with Chromium), the emulator,
// a private TMPDIR. Every process started here is stopped, and the sandbox
// removed, in after().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
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
  const script = `: ${sb.tmp} garbled; head -c 100000 /dev/zero >&3; sleep 30`;
  await assert.rejects(
    native.daemonSpawn({ name, program: 'sh', args: ['-c', script], env: {}, cwd: sb.tmp }),
    /could not wait for the daemon .*without a newline/,
  );
  await eventually(() => running('garbled').length === 0, { what: 'the daemon to be killed' });
  assert.equal(sb.readLock(name), null);
});

test('a lock handed to another process is not written by sessionUpdate', async () => {
  const name = await native.sessionClaim('handed', { pid: 0, blockDetection: true });
  assert.equal(await native.sessionUpdate(name, { url: 'http://mine.example/' }), true);
  assert.equal(sb.readLock(name).url, 'http://mine.example/');
  // Another (live) process owns it now: pid 1.
  sb.plant(name, { pid: 1, session: name });
  const inode = statSync(sb.lockPath(name)).ino;
  assert.equal(await native.sessionUpdate(name, { ready: true }), false);
  assert.deepEqual(sb.readLock(name), { pid: 1, session: name });
  assert.equal(statSync(sb.lockPath(name)).ino, inode, 'not rewritten');
  assert.equal(await native.sessionUpdate('never-claimed', { ready: true }), false);
  assert.equal(await native.sessionRemove(name, 1), true);
});

test('not ready in time: the error names the session and its log; the daemon runs on under its lock until closed', async () => {
  const env = { ...sb.env };
  const started = await commands.sessionStart({ url: `${site.url}/`, browserSession: 'sluggish', readyTimeoutMs: 1, env });
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
