// Sessions on a shared machine: a reused pid is not the daemon, the API key
// stays out of the daemon's arguments and environment (and the daemon is not
// dumpable), logs start fresh and are pruned, a FIFO at the log path fails
// the start, names have a length limit, an API outage is logged once. Real
// daemons, Chromium and the emulator on loopback, a private TMPDIR; every
// process started here is stopped and the sandbox removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  chownSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  existsSync,
} from 'node:fs';
import { join } from 'node:path';
import { sdk, serve, admin, cliPath, root, throwawayUser, jsonAs } from './helpers.mjs';
import { Sandbox, alive, eventually, pageHandler, startOf } from './sessions.mjs';

const INVALID_NAME = 'Invalid session name. Use only letters, numbers, hyphens, and underscores.';

let emu;
let site;
let sb;
let outerTmp;

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve(pageHandler);
  sb = new Sandbox(emu, 'harden');
  // connect() finds the lock directory through this process's os.tmpdir().
  outerTmp = process.env.TMPDIR;
  process.env.TMPDIR = sb.tmp;
  // Creates the lock directory.
  assert.equal((await sb.cli(['session', 'list'])).code, 0);
});

after(async () => {
  await sb?.dispose();
  if (outerTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outerTmp;
  await site?.close();
  await emu?.stop();
});

/** Clock ticks since boot, in the unit of a stat's start time (USER_HZ, 100 on Linux). */
const ticksNow = () => Math.floor(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 100);

/** Resolves once the clock has moved past `tick`. */
async function tickAfter(tick) {
  while (ticksNow() <= tick) await new Promise(setImmediate);
}

/** Starts `sleep` and waits until it runs. */
async function sleeper() {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

test('a lock whose pid now belongs to another process is stale: not listed, never signalled, refused by connect()', async (t) => {
  if (process.platform !== 'linux') return t.skip('the test reads /proc');
  // The daemon: a process that has ended, whose start the lock recorded.
  const daemon = await sleeper();
  const recorded = startOf(daemon.pid);
  // A process reusing the pid in the same clock tick would have the same start.
  await tickAfter(Number(recorded.split(':')[1]));
  await stop(daemon);
  // Its pid, reused by an unrelated process where the kernel lets us choose
  // the next pid; otherwise any live process stands for the reuse.
  let other;
  try {
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(daemon.pid - 1));
  } catch {
    // Not writable here.
  }
  other = await sleeper();
  t.diagnostic(other.pid === daemon.pid ? 'pid reused' : 'pid not reused: a live process with another start');
  try {
    const lock = {
      pid: other.pid,
      processStart: recorded,
      session: 'reused',
      url: `${site.url}/`,
      cdpUrl: 'http://127.0.0.1:9',
      connectionId: 1,
      ready: true,
    };
    assert.notEqual(startOf(other.pid), recorded);

    sb.plant('reused', lock);
    const listed = await sb.cli(['session', 'list']);
    assert.deepEqual(listed.json, { sessions: [], count: 0 });
    assert.equal(sb.readLock('reused'), null, 'removed as stale');

    sb.plant('reused', lock);
    const closed = await sb.cli(['session', 'close', '--browser-session', 'reused']);
    assert.deepEqual(closed.json, {
      browserSession: 'reused',
      message: 'Browser process was not running. Lock file cleaned up.',
    });
    assert.ok(alive(other.pid), 'the unrelated process was not signalled');
    assert.equal(sb.readLock('reused'), null);

    sb.plant('reused', lock);
    await assert.rejects(sdk.connect('reused'), {
      name: 'ConnectError',
      message: "Session 'reused' is no longer running. Stale lock file removed.",
    });
    assert.ok(alive(other.pid));
  } finally {
    await stop(other);
  }
});

test("a session: the key only on the daemon's stdin, a fresh log, old logs pruned, an API outage logged once", async () => {
  const name = 'hardened';
  sb.plant(name, { pid: 1, processStart: 'another boot:1', session: name });
  writeFileSync(sb.logPath(name), 'a line of an earlier session\n');
  // Logs of ended sessions: 25 a minute apart, and one from last month.
  const now = Date.now() / 1000;
  for (let i = 0; i < 25; i++) {
    writeFileSync(sb.logPath(`ended-${i}`), 'old\n');
    utimesSync(sb.logPath(`ended-${i}`), now - 60 * (i + 1), now - 60 * (i + 1));
  }
  writeFileSync(sb.logPath('ancient'), 'old\n');
  utimesSync(sb.logPath('ancient'), now - 30 * 86400, now - 30 * 86400);

  const started = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', name]);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  const { pid } = started.json;
  try {
    assert.equal(sb.readLock(name).processStart, startOf(pid), 'the lock records who the daemon is');

    // Neither in its arguments nor in its environment.
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    assert.ok(environ.includes(`TMPDIR=${sb.tmp}`), 'the environment was read');
    assert.ok(!environ.includes(emu.apiKey) && !environ.includes('ALUVIA_API_KEY'), 'no key in the environment');
    assert.ok(!cmdline.includes(emu.apiKey), 'no key in the arguments');

    assert.ok(!sb.log(name).includes('earlier session'), 'a reused name starts a fresh log');
    const kept = Array.from({ length: 25 }, (_, i) => `ended-${i}`).filter((n) => existsSync(sb.logPath(n)));
    assert.deepEqual(
      kept,
      Array.from({ length: 20 }, (_, i) => `ended-${i}`),
      'the newest 20 stay',
    );
    assert.ok(!existsSync(sb.logPath('ancient')), 'none older than a week');

    // Five failed config polls, then the API answers again.
    const faults = await admin(emu, 'POST', '/_emulator/faults', { apiStatus: 500, apiFaultCount: 5 });
    assert.equal(faults.status, 200);
    await eventually(() => sb.log(name).includes('config poll works again'), {
      what: 'the recovery line',
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    const lines = sb.log(name).split('\n');
    assert.equal(lines.filter((l) => l.includes('config poll failed')).length, 1, sb.log(name));
    assert.equal(lines.filter((l) => l.includes('config poll still failing')).length, 0, sb.log(name));
  } finally {
    await sb.cli(['session', 'close', '--browser-session', name]);
    await admin(emu, 'DELETE', '/_emulator/faults');
  }
  for (let i = 0; i < 25; i++) rmSync(sb.logPath(`ended-${i}`), { force: true });
});

test("a FIFO at the session's log path fails the start with an error, and leaves no lock", async () => {
  const fifo = sb.logPath('piped');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  try {
    const r = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'piped']);
    assert.equal(r.code, 1);
    assert.deepEqual(r.json, {
      error: "The session's log file is not a regular file. Remove it and try again.",
      browserSession: 'piped',
      logFile: fifo,
    });
    assert.equal(sb.readLock('piped'), null);
  } finally {
    rmSync(fifo, { force: true });
  }
});

test('a session name longer than 64 characters is an invalid name', async () => {
  const long = 'a'.repeat(65);
  for (const args of [
    ['session', 'start', `${site.url}/`, '--browser-session', long],
    ['session', 'get', '--browser-session', long],
  ]) {
    const r = await sb.cli(args);
    assert.equal(r.code, 1);
    assert.deepEqual(r.json, { error: INVALID_NAME }, args.join(' '));
  }
  assert.deepEqual(sb.locks(), []);
});

/** The CLI as `user`; resolves its JSON output. */
const cliAs = (user, args, env) => jsonAs(user, [process.execPath, cliPath, ...args], env);

test("an ordinary user's daemon is not dumpable: its /proc files belong to root", async (t) => {
  if (process.platform !== 'linux') return t.skip('Linux only');
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  const home = mkdtempSync(join(outerTmp ?? '/tmp', 'aluvia-harden-user-'));
  try {
    chownSync(home, user.uid, user.uid);
    chmodSync(home, 0o700);
    const readable = spawnSync('runuser', ['-u', user.name, '--', 'test', '-r', join(root, 'lib', 'index.js')]);
    if (readable.status !== 0) return t.skip('the checkout is not readable by another user');
    const env = { ...sb.env, TMPDIR: home, HOME: home };
    const started = await cliAs(user.name, ['session', 'start', `${site.url}/`, '--browser-session', 'theirs'], env);
    assert.equal(started.error, undefined, JSON.stringify(started));
    try {
      assert.equal(statSync(`/proc/${started.pid}/environ`).uid, 0, 'owned by root: not dumpable');
      assert.ok(!readFileSync(`/proc/${started.pid}/environ`, 'utf8').includes(emu.apiKey));
      // Its Chromium still gets a namespace of its own where the user may make one.
      const lock = JSON.parse(readFileSync(join(home, 'aluvia-sdk', 'cli-theirs.lock'), 'utf8'));
      const namespaces =
        spawnSync('runuser', ['-u', user.name, '--', 'unshare', '--user', '--net', 'true']).status === 0;
      assert.equal(lock.browserIsolation, namespaces ? 'namespace' : 'none');
    } finally {
      const closed = await cliAs(user.name, ['session', 'close', '--browser-session', 'theirs'], env);
      assert.equal(closed.message, 'Browser session closed.', JSON.stringify(closed));
    }
  } finally {
    user.remove();
    rmSync(home, { recursive: true, force: true });
  }
});

/** `{ pid, args }` of the live processes in session `sid` (a daemon leads its own, with its Chromium and script). */
function inSession(sid) {
  const out = spawnSync('ps', ['-eo', 'pid=,sid=,args='], { encoding: 'utf8' }).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m) => m && Number(m[2]) === sid && alive(Number(m[1])))
    .map((m) => ({ pid: Number(m[1]), args: m[3] }));
}

/** What the engine leaves in the temp folder while a session runs (Chromium profiles, scripts' temp folders, Playwright's artifacts). */
const leftovers = () =>
  readdirSync(sb.tmp).filter((f) => /^(aluvia-chromium-|aluvia-run-|playwright-artifacts-)/.test(f));

/** `session start` as a child process, not awaited: `{ child, done }` (done resolves its JSON output). */
function startInBackground(args, cwd = root) {
  const child = spawn(process.execPath, [cliPath, 'session', 'start', ...args], {
    cwd,
    env: { ...process.env, ...sb.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (c) => (stdout += c));
  const done = once(child, 'exit').then(() => JSON.parse(stdout || '{}'));
  return { child, done };
}

test('a daemon SIGKILLed at any point of its start leaves no Chromium and nothing the next `session list` does not sweep', async (t) => {
  if (process.platform !== 'linux') return t.skip('the test reads the process table');
  const name = 'killed';
  const handedOver = (cli) => {
    const lock = sb.readLock(name);
    return lock && lock.pid !== cli.pid ? lock.pid : null;
  };
  const points = [
    ['once the lock names the daemon', (cli) => handedOver(cli)],
    ['once its profile folder exists', (cli) => handedOver(cli) && leftovers().length > 0 && handedOver(cli)],
    [
      'once its Chromium runs',
      (cli) => {
        const pid = handedOver(cli);
        return pid && inSession(pid).some((p) => /chrom/.test(p.args) && p.pid !== pid) ? pid : null;
      },
    ],
    ['after the early lock write', (cli) => (sb.readLock(name)?.proxyUrl ? handedOver(cli) : null)],
  ];
  for (const [when, ready] of points) {
    const { child, done } = startInBackground([`${site.url}/`, '--browser-session', name]);
    let pid = null;
    const deadline = Date.now() + 30_000;
    while (!pid && Date.now() < deadline && child.exitCode === null) {
      pid = ready(child);
      if (!pid) await new Promise((r) => setTimeout(r, 2));
    }
    assert.ok(pid, `${when}: the point was reached`);
    process.kill(pid, 'SIGKILL');
    t.diagnostic(`${when}: killed with the profile ${sb.readLock(name)?.profileDir ? 'recorded' : 'not recorded'}`);
    const out = await done;
    assert.equal(out.error, 'Browser process exited unexpectedly.', `${when}: ${JSON.stringify(out)}`);
    // Its Chromium dies with it.
    await eventually(() => inSession(pid).length === 0, { what: `${when}: the daemon's processes to end` });
    const listed = await sb.cli(['session', 'list']);
    assert.deepEqual(listed.json, { sessions: [], count: 0 }, when);
    assert.deepEqual(leftovers(), [], `${when}: swept`);
    assert.equal(sb.readLock(name), null, when);
  }
});

test('a --run script that takes SIGTERM or never yields still gets a graceful close, and leaves nothing behind', async () => {
  const dir = mkdtempSync(join(sb.tmp, 'scripts-'));
  const scripts = {
    // Its own SIGTERM handler, then a loop that never yields.
    spinning: `process.on('SIGTERM', () => {});\nawait page.title();\nconsole.log('script is running');\nwhile (true) {}\n`,
    // Its own SIGTERM handler (and SIGINT), waiting forever.
    waiting: `for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => console.log('script ignores', s));\nconsole.log('script is running');\nawait new Promise(() => setInterval(() => {}, 1000));\n`,
  };
  for (const [name, text] of Object.entries(scripts)) {
    writeFileSync(join(dir, `${name}.mjs`), text);
    const started = await sb.cli(
      ['session', 'start', `${site.url}/`, '--browser-session', name, '--run', `${name}.mjs`],
      {
        cwd: dir,
      },
    );
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const { pid } = started.json;
    await eventually(() => sb.log(name).includes('script is running'), { what: `the ${name} script to run` });
    const began = Date.now();
    const closed = await sb.cli(['session', 'close', '--browser-session', name]);
    const took = Date.now() - began;
    assert.equal(closed.json.message, 'Browser session closed.', `${name}: ${closed.stdout}`);
    assert.ok(took < 5000, `${name}: closed in ${took} ms`);
    assert.ok(!alive(pid));
    assert.match(sb.log(name), /stopping \(SIGTERM\)[\s\S]*stopped, exit 0/, name);
    assert.equal(sb.readLock(name), null, name);
    await eventually(() => inSession(pid).length === 0, { what: `${name}: its processes to end` });
    assert.deepEqual(leftovers(), [], name);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('a lock without processStart (an older version) counts only while its pid is a session daemon', async (t) => {
  if (process.platform !== 'linux') return t.skip('the test reads /proc');
  const other = await sleeper();
  try {
    const lock = { pid: other.pid, session: 'older', url: `${site.url}/`, cdpUrl: 'http://127.0.0.1:9', ready: true };
    sb.plant('older', lock);
    const listed = await sb.cli(['session', 'list']);
    assert.deepEqual(listed.json, { sessions: [], count: 0 });
    assert.equal(sb.readLock('older'), null, 'removed as stale');

    sb.plant('older', lock);
    const closed = await sb.cli(['session', 'close', '--browser-session', 'older']);
    assert.deepEqual(closed.json, {
      browserSession: 'older',
      message: 'Browser process was not running. Lock file cleaned up.',
    });
    assert.equal(sb.readLock('older'), null);
    sb.plant('older', lock);
    const all = await sb.cli(['session', 'close', '--all']);
    assert.equal(all.json.error, 'No running browser sessions found.', all.stdout);
    assert.ok(alive(other.pid), 'the unrelated process was never signalled');
  } finally {
    await stop(other);
  }

  // A real daemon's lock, as an older version wrote it: still its session.
  const started = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'stripped']);
  assert.equal(started.code, 0, started.stdout);
  const { processStart, ...old } = sb.readLock('stripped');
  assert.ok(processStart);
  sb.plant('stripped', old);
  const listed = await sb.cli(['session', 'list']);
  assert.deepEqual(
    listed.json.sessions.map((s) => [s.browserSession, s.pid]),
    [['stripped', started.json.pid]],
  );
  const closed = await sb.cli(['session', 'close', '--browser-session', 'stripped']);
  assert.equal(closed.json.message, 'Browser session closed.', closed.stdout);
  assert.ok(!alive(started.json.pid));
  assert.equal(sb.readLock('stripped'), null);
});

test('what a session was started with is on no command line: URL, name and script reach the daemon on stdin', async (t) => {
  if (process.platform !== 'linux') return t.skip('the test reads /proc');
  const marker = `m${Math.random().toString(36).slice(2, 10)}`;
  const url = `${site.url}/two?token=${marker}url`;
  const name = `${marker}name`;
  const dir = mkdtempSync(join(sb.tmp, 'scripts-'));
  writeFileSync(
    join(dir, `${marker}script.mjs`),
    `console.log('script sees', await page.title());\nawait new Promise(() => setInterval(() => {}, 1000));\n`,
  );
  const started = await sb.cli(['session', 'start', url, '--browser-session', name, '--run', `${marker}script.mjs`], {
    cwd: dir,
  });
  assert.equal(started.code, 0, started.stdout + started.stderr);
  const { pid } = started.json;
  try {
    await eventually(() => sb.log(name).includes('script sees Second Page'), { what: 'the script to run' });
    const tree = inSession(pid);
    assert.ok(tree.length > 2, 'the daemon, its Chromium and its script');
    for (const p of tree) {
      const cmdline = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
      assert.ok(!cmdline.includes(marker), `${p.pid}: ${cmdline}`);
    }
    const table = spawnSync('ps', ['-eo', 'args='], { encoding: 'utf8' }).stdout;
    assert.ok(
      !table.includes(marker),
      table
        .split('\n')
        .filter((l) => l.includes(marker))
        .join('\n'),
    );
    // The session still knows them.
    const got = await sb.cli(['session', 'get', '--browser-session', name]);
    assert.equal(got.json.browserSession, name);
    assert.equal(got.json.startUrl, url);
    const listed = await sb.cli(['session', 'list']);
    assert.deepEqual(
      listed.json.sessions.map((s) => [s.browserSession, s.startUrl]),
      [[name, url]],
    );
  } finally {
    await sb.cli(['session', 'close', '--browser-session', name]);
    rmSync(dir, { recursive: true, force: true });
  }
});
