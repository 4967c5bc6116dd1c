// The owner-only checks fail closed, tried the way an attacker on a shared
// machine tries them: another local user sends a request to the proxy or to
// a session's CDP endpoint and resets the connection (or just closes it)
// before the owner lookup can find its socket; against a root owner and an
// ordinary one. Then: no web content reaches a session's CDP endpoint through
// a proxy, another user's `aluvia-sdk` folder does not lock anyone out, and
// the namespace's socket factory holds no secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  openSync,
  readSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  sdk,
  root,
  runNode,
  serve,
  withEmulator,
  emulatorClientOptions,
  throwawayUser,
  jsonAs,
  viaProxy,
  eventually,
} from './helpers.mjs';
import { Sandbox, descendants } from './sessions.mjs';

const { AluviaClient } = sdk;

// What the attacker runs: for each of `modes` (`reset`: SO_LINGER 0, a RST;
// `close`: an ordinary close), `count` connections at once to host:port,
// then `count` one after another, that each send `request` and go away.
const ATTACK = `
const net = require('node:net');
const [host, port, count, request, ...modes] = process.argv.slice(1);
const one = (mode) => new Promise((resolve) => {
  const s = net.connect({ host, port: Number(port) }, () => {
    s.write(request, () => {
      if (mode === 'reset') s.resetAndDestroy(); else s.destroy();
      resolve(true);
    });
  });
  s.on('error', () => resolve(false));
});
(async () => {
  const sent = {};
  for (const mode of modes) {
    // All at once, so that many wait in the listen queue and are gone
    // before the server accepts them; then one after another.
    const results = await Promise.all(Array.from({ length: Number(count) }, () => one(mode)));
    for (let i = 0; i < Number(count); i++) results.push(await one(mode));
    sent[mode] = results.filter(Boolean).length;
  }
  process.stdout.write(JSON.stringify({ sent }));
})();
`;

/** Runs ATTACK in this process's own uid (root, when the owner is someone else). */
function attackAsMe(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', ATTACK, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('close', () => {
      try {
        resolve(JSON.parse(out));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** An origin that records the paths it was asked for. */
async function recordingOrigin() {
  const paths = [];
  const srv = await serve((req, res) => {
    paths.push(req.url);
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><title>${req.url}</title><p>${'Plain content for reading. '.repeat(8)}</p>`);
  });
  return { ...srv, paths };
}

const ROUNDS = 40;

/** ATTACK's arguments against 127.0.0.1:`port`, and what it reports when every connection got through. */
const attackArgs = (port, request) => ['127.0.0.1', String(port), String(ROUNDS), request, 'reset', 'close'];
const SENT = { reset: 2 * ROUNDS, close: 2 * ROUNDS };

/** The requests an attacker sends: a DevTools `PUT /json/new?<url>` to the CDP endpoint, a pipelined pair of absolute-form GETs to the proxy. */
const gateRequest = (url) => `PUT /json/new?${url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
const proxyRequest = (url) => {
  const host = new URL(url).host;
  return `GET ${url} HTTP/1.1\r\nHost: ${host}\r\n\r\nGET ${url}/again HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
};

test("a root owner's proxy and CDP endpoint serve nothing to another user who resets or closes at once", async (t) => {
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  const origin = await recordingOrigin();
  try {
    await withEmulator(async (emu) => {
      const sb = new Sandbox(emu, 'owner');
      try {
        const start = await sb.cli(['session', 'start', `${origin.url}/first`, '--browser-session', 'own']);
        assert.equal(start.code, 0, start.stderr);
        const { cdpUrl } = start.json;
        const proxy = new URL(sb.readLock('own').proxyUrl);
        const gate = new URL(cdpUrl);
        // The idle clock as of ready: a refused connection is no client.
        const idleSince = sb.readLock('own').idleSince;
        assert.ok(idleSince, 'idleSince is in the lock at ready');
        const gateOut = await jsonAs(user.name, [
          process.execPath,
          '-e',
          ATTACK,
          ...attackArgs(gate.port, gateRequest(`${origin.url}/via-gate`)),
        ]);
        const proxyOut = await jsonAs(user.name, [
          process.execPath,
          '-e',
          ATTACK,
          ...attackArgs(proxy.port, proxyRequest(`${origin.url}/via-proxy`)),
        ]);
        assert.deepEqual(gateOut.sent, SENT, 'every attack reached the endpoint');
        assert.deepEqual(proxyOut.sent, SENT, 'every attack reached the proxy');
        // Give a served request time to land, then look: the browser opened
        // nothing and the origin saw nothing of the attacker's.
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(
          sb.readLock('own').idleSince,
          idleSince,
          "the attacker's connections did not reset the idle clock",
        );
        const list = await (await fetch(`${cdpUrl}/json/list`)).json();
        assert.deepEqual(
          list.filter((target) => target.url.includes('/via-')),
          [],
          'the browser opened no page for the attacker',
        );
        assert.deepEqual(
          origin.paths.filter((p) => p.includes('/via-')),
          [],
        );
        // The owner is still served, by both.
        const mine = await viaProxy(proxy.href, `${origin.url}/owner`);
        assert.equal(mine.status, 200);
        assert.equal((await fetch(`${cdpUrl}/json/version`)).status, 200);
      } finally {
        await sb.dispose();
      }
    });
  } finally {
    user.remove();
    await origin.close();
  }
});

test("an ordinary owner's proxy and CDP endpoint serve nothing to root resetting or closing at once", async (t) => {
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  const readable = spawnSync('runuser', ['-u', user.name, '--', 'test', '-r', join(root, 'lib', 'index.js')]);
  if (readable.status !== 0) return t.skip('the checkout is not readable by another user');
  const home = mkdtempSync(join(tmpdir(), 'aluvia-owner-'));
  chownSync(home, user.uid, user.uid);
  chmodSync(home, 0o700);
  const origin = await recordingOrigin();
  // The owner's program: a client with its browser, which says where its
  // proxy and CDP endpoint are, waits for a line on stdin, then reports the
  // browser's pages and what its own proxy answers.
  const script = `
    const sdk = require(${JSON.stringify(join(root, 'lib', 'index.js'))});
    (async () => {
      const emu = await sdk.startEmulator();
      const client = new sdk.AluviaClient({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl, gatewayHost: emu.gatewayHost,
        gatewayPort: emu.gatewayPort, logLevel: 'silent', startPlaywright: true });
      const conn = await client.start();
      process.stdout.write(JSON.stringify({ proxyUrl: conn.url, cdpUrl: conn.cdpUrl, isolation: conn.browserIsolation, key: emu.apiKey }) + '\\n');
      await new Promise((resolve) => process.stdin.once('data', resolve));
      const list = await (await fetch(conn.cdpUrl + '/json/list')).json();
      process.stdout.write(JSON.stringify({ urls: list.map((t) => t.url) }) + '\\n');
      await conn.close();
      await emu.stop();
    })().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e) }) + '\\n'); process.exit(1); });`;
  const owner = spawn(
    'runuser',
    ['-u', user.name, '--', 'env', `HOME=${home}`, `TMPDIR=${home}`, process.execPath, '-e', script],
    {
      cwd: '/',
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines = [];
  let buffered = '';
  owner.stdout.on('data', (c) => {
    buffered += c;
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, i)));
      buffered = buffered.slice(i + 1);
    }
  });
  try {
    const ready = await eventually(() => lines[0], { timeoutMs: 60_000, what: "the owner's client" });
    assert.equal(ready.error, undefined);
    const proxy = new URL(ready.proxyUrl);
    const gate = new URL(ready.cdpUrl);
    const proxyOut = await attackAsMe(attackArgs(proxy.port, proxyRequest(`${origin.url}/via-proxy`)));
    assert.deepEqual(proxyOut.sent, SENT);
    if (ready.isolation === 'namespace') {
      const gateOut = await attackAsMe(attackArgs(gate.port, gateRequest(`${origin.url}/via-gate`)));
      assert.deepEqual(gateOut.sent, SENT);
    }
    if (ready.isolation === 'namespace') {
      // The socket factory of the owner's browser: undumpable (its /proc
      // files belong to root, so the owner's other processes cannot read its
      // memory), and nothing of the owner's key in that memory anyway.
      const factories = factoriesOf(user.uid);
      assert.equal(factories.length, 1, 'one socket factory');
      const owned = spawnSync('stat', ['-c', '%u', `/proc/${factories[0]}/mem`], { encoding: 'utf8' }).stdout.trim();
      assert.equal(owned, '0', 'the factory is undumpable');
      assert.deepEqual(memoryHolds(factories[0], [ready.key]), []);
    }
    await new Promise((r) => setTimeout(r, 1500));
    owner.stdin.end('go\n');
    const report = await eventually(() => lines[1], { timeoutMs: 30_000, what: "the owner's report" });
    assert.equal(report.error, undefined);
    assert.deepEqual(
      report.urls.filter((u) => u.includes('/via-')),
      [],
    );
    assert.deepEqual(
      origin.paths.filter((p) => p.includes('/via-')),
      [],
    );
    await new Promise((resolve) => (owner.exitCode === null ? owner.on('close', resolve) : resolve()));
    assert.equal(owner.exitCode, 0);
  } finally {
    if (owner.exitCode === null) owner.kill('SIGKILL');
    user.remove();
    rmSync(home, { recursive: true, force: true });
    await origin.close();
  }
});

test("no request through a proxy reaches a session's CDP endpoint, in any spelling (403)", async () => {
  const origin = await recordingOrigin();
  try {
    await withEmulator(async (emu) => {
      const sb = new Sandbox(emu, 'cdp403');
      const outer = process.env.TMPDIR;
      try {
        const start = await sb.cli(['session', 'start', `${origin.url}/first`, '--browser-session', 'other']);
        assert.equal(start.code, 0, start.stderr);
        const otherPort = new URL(start.json.cdpUrl).port;
        // An in-process client of this user: its proxy knows its own
        // browser's endpoint, and the CLI session's from its lock file.
        process.env.TMPDIR = sb.tmp;
        const client = new AluviaClient(
          emulatorClientOptions(emu, { startPlaywright: true, blockDetection: { enabled: false } }),
        );
        const conn = await client.start();
        try {
          const ownPort = new URL(conn.cdpUrl).port;
          for (const port of [ownPort, otherPort]) {
            for (const host of ['127.0.0.1', 'localhost', '127.1', '2130706433']) {
              const r = await viaProxy(conn.url, `http://${host}:${port}/json/version`);
              assert.equal(r.status, 403, `${host}:${port}: ${r.body}`);
              assert.match(r.body, /control endpoint/);
            }
          }
          // The CLI session's proxy refuses the in-process browser's endpoint too.
          const other = sb.readLock('other');
          const r = await viaProxy(other.proxyUrl, `http://127.0.0.1:${ownPort}/json/list`);
          assert.equal(r.status, 403, r.body);
          // Tunnels too.
          const tunnel = await rawConnect(conn.url, `127.0.0.1:${otherPort}`);
          assert.match(tunnel, /^HTTP\/1\.1 403/);
          // A page in the browser cannot fetch it either.
          const page = await conn.browserContext.newPage();
          await page.goto(`${origin.url}/page`);
          const fetched = await page.evaluate(
            (url) =>
              fetch(url, { mode: 'no-cors' }).then(
                (res) => res.type,
                () => 'failed',
              ),
            `http://127.0.0.1:${otherPort}/json/version`,
          );
          assert.notEqual(fetched, 'basic');
          // Other loopback servers are served as before.
          const plain = await viaProxy(conn.url, `${origin.url}/plain`);
          assert.equal(plain.status, 200);
        } finally {
          await conn.close();
        }
        // Once the session is closed its port is no longer refused.
        assert.equal((await sb.cli(['session', 'close', '--browser-session', 'other'])).code, 0);
      } finally {
        if (outer === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = outer;
        await sb.dispose();
      }
    });
  } finally {
    await origin.close();
  }
});

/** A raw CONNECT through `proxyUrl`; resolves the first bytes of the answer. */
function rawConnect(proxyUrl, authority) {
  const p = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: p.hostname, port: Number(p.port) }, () => {
      s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    });
    s.once('data', (d) => {
      resolve(d.toString());
      s.destroy();
    });
    s.on('error', reject);
  });
}

test("another user's aluvia-sdk folder in a shared temp folder locks nobody out: the CLI and connect() use this user's own", async (t) => {
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  await withEmulator(async (emu) => {
    const sb = new Sandbox(emu, 'squat');
    try {
      // A shared, sticky temp folder in which the other user got there first.
      chmodSync(sb.tmp, 0o1777);
      const made = spawnSync('runuser', ['-u', user.name, '--', 'mkdir', '-m', '0755', join(sb.tmp, 'aluvia-sdk')]);
      assert.equal(made.status, 0, String(made.stderr));
      const start = await sb.cli(['session', 'start', 'about:blank', '--browser-session', 'mine']);
      assert.equal(start.code, 0, start.stderr);
      const own = join(sb.tmp, `aluvia-sdk-${process.getuid()}`);
      assert.ok(existsSync(join(own, 'cli-mine.lock')), 'the lock is in this user’s own folder');
      const list = await sb.cli(['session', 'list']);
      assert.deepEqual(
        list.json.sessions.map((s) => s.browserSession),
        ['mine'],
      );
      // connect() in a process of its own, as a user's script would run it.
      const script = `const { connect } = require(${JSON.stringify(join(root, 'lib', 'index.js'))});
        connect('mine').then(async (s) => { process.stdout.write(JSON.stringify({ cdpUrl: s.cdpUrl, title: await s.page.title() })); await s.disconnect(); });`;
      const connected = await runNode(['-e', script], { env: { TMPDIR: sb.tmp } });
      assert.equal(connected.code, 0, connected.stderr);
      assert.equal(JSON.parse(connected.stdout).cdpUrl, start.json.cdpUrl);
      const close = await sb.cli(['session', 'close', '--browser-session', 'mine']);
      assert.equal(close.code, 0, close.stderr);
    } finally {
      await sb.dispose();
      user.remove();
    }
  });
});

/** Pids of the namespace socket factories running as `uid`. */
function factoriesOf(uid) {
  return spawnSync('pgrep', ['-u', String(uid), '-x', 'aluvia-netns'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .map(Number);
}

/** Whether `needle` occurs in any private writable memory of process `pid` (read as root). */
function memoryHolds(pid, needles) {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter(Boolean);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  const found = new Set();
  try {
    for (const line of maps) {
      const [range, perms] = line.split(/\s+/);
      if (!perms.startsWith('rw')) continue;
      const [start, end] = range.split('-').map((h) => BigInt(`0x${h}`));
      const size = Number(end - start);
      if (size > 1 << 30) continue;
      const buf = Buffer.alloc(size);
      let got = 0;
      try {
        got = readSync(fd, buf, 0, size, start);
      } catch {
        continue;
      }
      const text = buf.subarray(0, got);
      for (const n of needles) if (text.includes(n)) found.add(n);
    }
  } finally {
    closeSync(fd);
  }
  return [...found];
}

test("the namespace's socket factory holds neither the API key nor the gateway password", async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root to read another process’s memory');
  await withEmulator(async (emu) => {
    const sb = new Sandbox(emu, 'factory');
    try {
      const start = await sb.cli(['session', 'start', 'about:blank', '--browser-session', 'f']);
      assert.equal(start.code, 0, start.stderr);
      const get = await sb.cli(['session', 'get', '--browser-session', 'f']);
      if (get.json.browserIsolation !== 'namespace') return t.skip('Chromium is not isolated here');
      const password = get.json.connection.proxy_password;
      assert.ok(password, 'the connection has a gateway password');
      const factories = descendants(start.json.pid).filter((p) => {
        try {
          return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'aluvia-netns';
        } catch {
          return false;
        }
      });
      assert.equal(factories.length, 1, 'one socket factory');
      const [factory] = factories;
      // And nothing of the daemon's secrets in its memory: the daemon's own
      // memory holds them (the check can see them), the factory's does not.
      assert.deepEqual(memoryHolds(start.json.pid, [emu.apiKey]), [emu.apiKey], 'the check sees a secret where one is');
      assert.deepEqual(memoryHolds(factory, [emu.apiKey, password]), []);
    } finally {
      await sb.dispose();
    }
  });
});
