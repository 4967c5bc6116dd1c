// Sessions that look after themselves: the idle timeout (a session nobody
// uses closes itself, leaving nothing; clients and commands keep it; the
// page's own traffic does not) and persistent profiles (a login made in one
// session is there in the next, also after a SIGKILL; one live session per
// profile; `profile list|delete`; no link followed), with the real CLI, real
// Chromium and real clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sdk, serve, root, require, emulatorClientOptions } from './helpers.mjs';
import { Sandbox, alive, descendants, eventually, pageHandler } from './sessions.mjs';

let emu;
let site;
/** When the polling page's requests came. */
let polls = [];

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve((req, res) => {
    if (req.url === '/poll') {
      polls.push(Date.now());
      res.end('ok');
    } else if (req.url === '/polling') {
      res.setHeader('content-type', 'text/html');
      res.end(
        `<!doctype html><title>Polling</title><p>${'A page that keeps asking its server for news. '.repeat(8)}</p>
         <script>setInterval(() => fetch('/poll').catch(() => {}), 500)</script>`,
      );
    } else {
      pageHandler(req, res);
    }
  });
});

after(async () => {
  await site?.close();
  await emu?.stop();
});

/** Chromium profiles and temp folders of the engine left in the sandbox's TMPDIR. */
const leftovers = (sb) => readdirSync(sb.tmp).filter((f) => f !== 'aluvia-sdk' && f !== 'home');

/** The session's daemon and everything under it are gone, with its lock and profile. */
async function goneForGood(sb, s) {
  const name = s.browserSession;
  await eventually(() => !alive(s.pid) && s.tree.every((p) => !alive(p)), {
    what: `session ${name}'s processes to end`,
    timeoutMs: 15_000,
  });
  assert.equal(sb.readLock(name), null, 'its lock is removed');
  assert.ok(s.lock.profileDir && !existsSync(s.lock.profileDir), 'its profile is removed');
}

async function start(sb, name, url, ...flags) {
  const r = await sb.cli(['session', 'start', url, '--browser-session', name, ...flags]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return { ...r.json, tree: descendants(r.json.pid), lock: sb.readLock(name) };
}

test('idle timeout: a session nobody uses closes itself after it, leaving nothing; 0 and the defaults', async () => {
  const sb = new Sandbox(emu, 'idle');
  try {
    const bad = await sb.cli(['session', 'start', site.url, '--idle-timeout', '5x']);
    assert.equal(bad.code, 1);
    assert.equal(bad.json.error, "Invalid --idle-timeout: '5x'. Use a duration such as 30m, 2h or 0.");
    assert.deepEqual(sb.locks(), [], 'nothing claimed for a bad value');

    polls = [];
    const began = Date.now();
    const [quiet, polling, never, usual] = await Promise.all([
      start(sb, 'quiet', site.url, '--idle-timeout', '3s'),
      start(sb, 'polling', `${site.url}/polling`, '--idle-timeout', '3000'),
      start(sb, 'never', site.url, '--idle-timeout', '0'),
      start(sb, 'usual', site.url),
    ]);
    assert.equal(quiet.lock.idleTimeoutMs, 3000);
    assert.equal(polling.lock.idleTimeoutMs, 3000);
    assert.ok(!Number.isNaN(Date.parse(quiet.lock.idleSince)), `idleSince is an ISO time: ${quiet.lock.idleSince}`);
    const listed = await sb.cli(['session', 'list']);
    const shown = Object.fromEntries(listed.json.sessions.map((s) => [s.browserSession, s]));
    assert.equal(shown.never.idleTimeoutMs, null);
    assert.equal(shown.usual.idleTimeoutMs, 3_600_000, 'a headless session: 1 h unless given');

    // The quiet one and the polling one close themselves; the page's polls
    // went on all along and did not count.
    await goneForGood(sb, quiet);
    assert.ok(Date.now() - began >= 3000, 'not before its timeout');
    await goneForGood(sb, polling);
    const ready = Date.parse(polling.lock.idleSince);
    const during = polls.filter((t) => t > ready + 1000);
    assert.ok(during.length >= 1, `the page polled while the clock ran: ${polls.map((t) => t - ready)}`);
    assert.match(sb.log('quiet'), /stopping \(closed after 3s idle\)/);
    assert.match(sb.log('polling'), /closed after 3s idle/);

    // `0` and the default (1 h) are still there well past 3 s.
    await sleep(Math.max(0, began + 5000 - Date.now()));
    assert.ok(alive(never.pid) && alive(usual.pid), 'the sessions without a short timeout run on');
    const after = await sb.cli(['session', 'list']);
    assert.deepEqual(after.json.sessions.map((s) => s.browserSession).sort(), ['never', 'usual']);
    assert.equal((await sb.cli(['session', 'close', '--all'])).code, 0);
    assert.deepEqual(leftovers(sb), [], 'no profile or temp folder left');
  } finally {
    await sb.dispose();
  }
});

test('idle timeout: a connect() client keeps the session past it, which closes 3 s after the client leaves; commands restart the clock', async () => {
  const sb = new Sandbox(emu, 'idle-client');
  try {
    const s = await start(sb, 'held', site.url, '--idle-timeout', '3s');
    // A Playwright client through connect(), in a process of its own, for 5 s.
    const code = `
      const { connect } = require(${JSON.stringify(`${root}/lib/index.js`)});
      (async () => {
        const c = await connect('held');
        process.stdout.write('connected\\n');
        await new Promise((r) => setTimeout(r, 5000));
        await c.page.title();
        await c.disconnect();
        process.stdout.write('disconnected at ' + Date.now() + '\\n');
      })().catch((e) => { process.stdout.write(String(e)); process.exit(1); });`;
    const child = spawn(process.execPath, ['-e', code], {
      env: { ...process.env, ...sb.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    const exited = new Promise((r) => child.on('close', r));
    await eventually(() => out.includes('connected'), { what: 'the client to connect', timeoutMs: 20_000 });
    const lock = await eventually(() => (sb.readLock('held')?.idleSince === null ? sb.readLock('held') : null), {
      what: 'idleSince null while the client is connected',
    });
    assert.equal(lock.idleSince, null);
    // Past its timeout, with the client still connected (for 5 s in all).
    await sleep(4000);
    assert.ok(alive(s.pid), 'still up 4 s after its client connected');
    assert.equal(await exited, 0, out);
    // When the client had disconnected (its own clock is this machine's).
    const left = Number(out.match(/disconnected at (\d+)/)?.[1]);
    assert.ok(left > 0, out);
    await goneForGood(sb, s);
    const closedAfter = Date.now() - left;
    assert.ok(closedAfter >= 2500, `closed ${closedAfter} ms after the client left, not at once`);
    assert.match(sb.log('held'), /closed after 3s idle/);

    // `session get` now and then keeps a session alive.
    const g = await start(sb, 'polled', site.url, '--idle-timeout', '3s');
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      const r = await sb.cli(['session', 'get', '--browser-session', 'polled']);
      assert.equal(r.code, 0, r.stdout);
      await sleep(700);
    }
    assert.ok(alive(g.pid), 'six seconds of `session get` every ~1 s kept it');
    await goneForGood(sb, g);
  } finally {
    await sb.dispose();
  }
});

test('idle timeout without a namespace (ALUVIA_BROWSER_ISOLATION=none): clients reach a gate that keeps the clock', async () => {
  const { chromium } = require('playwright-core');
  const sb = new Sandbox(emu, 'idle-none');
  try {
    const s = await sb.cli(['session', 'start', site.url, '--browser-session', 'plain', '--idle-timeout', '3s'], {
      env: { ALUVIA_BROWSER_ISOLATION: 'none' },
    });
    assert.equal(s.code, 0, s.stdout + s.stderr);
    const tree = descendants(s.json.pid);
    const lock = sb.readLock('plain');
    assert.equal(lock.browserIsolation, 'none');
    // Chromium's own DevTools port is not the one clients are given.
    const own = readFileSync(join(lock.profileDir, 'DevToolsActivePort'), 'utf8').split('\n')[0];
    assert.notEqual(own, new URL(s.json.cdpUrl).port, 'clients get the gate, not Chromium itself');
    const browser = await chromium.connectOverCDP(s.json.cdpUrl);
    await sleep(4500);
    assert.ok(alive(s.json.pid), 'a connected client keeps it past its timeout');
    assert.equal(sb.readLock('plain').idleSince, null);
    await browser.close();
    await goneForGood(sb, { ...s.json, tree, lock });
    assert.match(sb.log('plain'), /closed after 3s idle/);
  } finally {
    await sb.dispose();
  }
});

/** A home of its own (0700) for `~/.aluvia`. */
function privateHome(sb) {
  const home = join(sb.tmp, 'home');
  mkdirSync(home, { mode: 0o700 });
  return home;
}

/** The site's visits of `path` (over plain HTTP: the same site), oldest first. */
async function siteVisits(path) {
  const res = await fetch(new URL('/_site/visits', emu.siteUrl));
  return (await res.json()).filter((v) => v.path === path);
}

test('persistent profiles: a login survives close and SIGKILL; one live session per profile; list and delete', async () => {
  const { chromium } = require('playwright-core');
  const sb = new Sandbox(emu, 'profile');
  const home = privateHome(sb);
  const env = { HOME: home, ALUVIA_TRUST_SPKI: emu.siteSpki };
  const cli = (args) => sb.cli(args, { env });
  const siteUrl = (path) => new URL(path, emu.siteHttpsUrl).href;
  try {
    // Signed in through the gateway (the site challenges direct visitors).
    const first = await cli(['session', 'start', siteUrl('/login?user=first'), '--profile', 'work', '--auto-unblock']);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const dir = join(home, '.aluvia', 'profiles', 'work');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    await eventually(async () => (await cli(['session', 'get'])).json.lastDetection?.blockStatus === 'clear', {
      what: 'the login page, clear',
      timeoutMs: 30_000,
      intervalMs: 300,
    });
    const got = await cli(['session', 'get']);
    assert.equal(got.json.profile, 'work');
    const password = got.json.connection.proxy_password;

    // A second live session on it: the in-use error, nothing started.
    const second = await cli(['session', 'start', siteUrl('/account'), '--profile', 'work', '--browser-session', 'x']);
    assert.equal(second.code, 1);
    assert.deepEqual(second.json, {
      error: `Profile 'work' is in use by session '${first.json.browserSession}'.`,
      browserSession: first.json.browserSession,
    });
    const listed = await cli(['profile', 'list']);
    assert.equal(listed.json.count, 1);
    assert.equal(listed.json.profiles[0].name, 'work');
    assert.equal(listed.json.profiles[0].inUseBy, first.json.browserSession);
    assert.ok(listed.json.profiles[0].sizeBytes > 0);
    assert.ok(!Number.isNaN(Date.parse(listed.json.profiles[0].lastUsed)));
    const refused = await cli(['profile', 'delete', 'work']);
    assert.equal(refused.code, 1);
    assert.equal(refused.json.error, `Profile 'work' is in use by session '${first.json.browserSession}'.`);

    assert.equal((await cli(['session', 'close'])).code, 0);
    assert.ok(existsSync(join(dir, 'Default')), 'the profile is kept after close');

    // The next session with it is signed in: the site sees the cookie, the
    // page its local storage. It signs in anew, and is then SIGKILLed.
    const again = await cli(['session', 'start', siteUrl('/account'), '--profile', 'work', '--auto-unblock']);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    await checkSignedIn(chromium, again.json.cdpUrl, siteUrl('/account'), 'first');
    const browser = await chromium.connectOverCDP(again.json.cdpUrl);
    const page = browser.contexts()[0].pages()[0];
    await page.goto(siteUrl('/login?user=second'));
    assert.equal(await page.evaluate(() => localStorage.getItem('login')), 'second');
    await browser.close().catch(() => {});
    // Chromium writes cookies to disk at least every 30 s (local storage
    // within seconds); a SIGKILLed daemon's Chromium is told to quit, and
    // what it had written is what the next session finds.
    await sleep(31_000);
    const tree = descendants(again.json.pid);
    process.kill(again.json.pid, 'SIGKILL');
    await eventually(() => tree.every((p) => !alive(p)), { what: "the killed session's Chromium to end" });

    const third = await cli(['session', 'start', siteUrl('/account'), '--profile', 'work', '--auto-unblock']);
    assert.equal(third.code, 0, third.stdout + third.stderr);
    await checkSignedIn(chromium, third.json.cdpUrl, siteUrl('/account'), 'second');
    assert.equal((await cli(['session', 'close'])).code, 0);

    // Nothing secret in it.
    for (const file of filesUnder(dir)) {
      const bytes = readFileSync(file);
      assert.equal(bytes.indexOf(emu.apiKey), -1, `the API key in ${file}`);
      assert.equal(bytes.indexOf(password), -1, `the gateway password in ${file}`);
    }

    const deleted = await cli(['profile', 'delete', 'work']);
    assert.deepEqual(deleted.json, { profile: 'work', message: 'Profile deleted.' });
    assert.ok(!existsSync(dir));
    assert.deepEqual((await cli(['profile', 'list'])).json, { profiles: [], count: 0 });
    assert.equal((await cli(['profile', 'delete', 'work'])).json.error, "No profile named 'work'.");
    assert.equal(
      (await cli(['session', 'start', site.url, '--profile', '../x'])).json.error,
      'Invalid profile name. Use only letters, numbers, hyphens, and underscores.',
    );
  } finally {
    await sb.dispose();
  }
});

/** Every file under `dir`, links not followed. */
function filesUnder(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The session's browser is signed in as `user`: the site got the cookie, the page has the item. */
async function checkSignedIn(chromium, cdpUrl, url, user) {
  const browser = await chromium.connectOverCDP(cdpUrl);
  try {
    const page = browser.contexts()[0].pages()[0];
    const cookies = await browser.contexts()[0].cookies(url);
    assert.equal(cookies.find((c) => c.name === 'login')?.value, user, JSON.stringify(cookies));
    await eventually(async () => page.url() === url, { what: 'the start page' });
    assert.equal(await page.evaluate(() => localStorage.getItem('login')), user);
    // What the site saw: the cookie came with the start page's requests.
    const seen = await siteVisits('/account');
    assert.equal(seen.at(-1)?.login, user, JSON.stringify(seen));
  } finally {
    await browser.close().catch(() => {});
  }
}

test('persistent profiles: a symlinked ~/.aluvia/profiles is refused and nothing is written through it', async () => {
  const sb = new Sandbox(emu, 'profile-link');
  const home = privateHome(sb);
  const elsewhere = mkdtempSync(join(sb.tmp, 'elsewhere-'));
  try {
    mkdirSync(join(home, '.aluvia'), { mode: 0o700 });
    symlinkSync(elsewhere, join(home, '.aluvia', 'profiles'));
    const r = await sb.cli(['session', 'start', site.url, '--profile', 'work'], { env: { HOME: home } });
    assert.equal(r.code, 1);
    assert.match(r.json.error, /profiles: it is a symlink/);
    const listed = await sb.cli(['profile', 'list'], { env: { HOME: home } });
    assert.match(listed.json.error, /it is a symlink/);
    assert.deepEqual(readdirSync(elsewhere), [], 'nothing written through the link');
    assert.deepEqual(sb.locks(), []);
  } finally {
    await sb.dispose();
    rmSync(elsewhere, { recursive: true, force: true });
  }
});

test("persistent profiles: an AluviaClient's own profile, held by its process and kept after stop()", async () => {
  const sb = new Sandbox(emu, 'profile-client');
  const home = privateHome(sb);
  const options = emulatorClientOptions(emu, { startPlaywright: true, profile: 'mine' });
  const code = `
    const { AluviaClient } = require(${JSON.stringify(`${root}/lib/index.js`)});
    (async () => {
      try {
        new AluviaClient({ ...${JSON.stringify(options)}, startPlaywright: false });
        process.stdout.write('no error\\n');
      } catch (e) { process.stdout.write('without a browser: ' + e.message + '\\n'); }
      const client = new AluviaClient(${JSON.stringify(options)});
      const connection = await client.start();
      process.stdout.write('started ' + connection.cdpUrl + '\\n');
      await new Promise((r) => process.stdin.once('data', r));
      await client.stop();
      process.stdout.write('stopped\\n');
    })().catch((e) => { process.stdout.write('failed: ' + e.message); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', code], {
    env: { ...process.env, ...sb.env, HOME: home },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  const exited = new Promise((r) => child.on('close', r));
  try {
    await eventually(() => out.includes('started') || out.includes('failed'), {
      what: 'the client to start',
      timeoutMs: 30_000,
    });
    assert.match(out, /without a browser: The profile option is for the browser: set startPlaywright: true with it\./);
    assert.match(out, /started /, out);
    const r = await sb.cli(['session', 'start', site.url, '--profile', 'mine'], { env: { HOME: home } });
    assert.equal(r.json.error, `Profile 'mine' is in use by another program (pid ${child.pid}).`);
    const listed = await sb.cli(['profile', 'list'], { env: { HOME: home } });
    assert.equal(listed.json.profiles[0].inUseBy, `pid ${child.pid}`);
    child.stdin.end('stop\n');
    assert.equal(await exited, 0, out);
    assert.ok(existsSync(join(home, '.aluvia', 'profiles', 'mine', 'Default')), 'kept after stop()');
    const after = await sb.cli(['profile', 'list'], { env: { HOME: home } });
    assert.equal(after.json.profiles[0].inUseBy, null);
  } finally {
    child.kill('SIGKILL');
    await sb.dispose();
  }
});
