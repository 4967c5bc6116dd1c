// The browser only its owner can reach, that never goes around the proxy:
// another local user against the CDP endpoint and every listening port, the
// owner's CDP clients through the engine's endpoint, an ordinary user's
// session in a user + network namespace, and pages that try to leave around
// the proxy (WebRTC to a STUN server, a fetch to loopback, a name to resolve).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  sdk,
  root,
  serve,
  withEmulator,
  emulatorClientOptions,
  eventually,
  throwawayUser,
  jsonAs,
  require,
  privateTmpdir,
} from './helpers.mjs';
import { Sandbox, descendants } from './sessions.mjs';

const { AluviaClient, connect } = sdk;
const { chromium } = require('playwright-core');
const puppeteer = require('puppeteer-core');
const CDP = require('chrome-remote-interface');

/** Runs `node -e script …args` as `user`; resolves its parsed JSON output. */
const nodeAs = (user, script, args = [], env = {}) => jsonAs(user, [process.execPath, '-e', script, ...args], env);

// What another user tries: the CDP endpoint itself, then every TCP port
// listening on the host's loopback or wildcard addresses, looking for a
// DevTools answer naming the session's browser.
const PROBE = `
const http = require('node:http');
const fs = require('node:fs');
const [cdpUrl, browserId] = process.argv.slice(1);
const get = (url) => new Promise((resolve) => {
  const req = http.get(url, { timeout: 3000 }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => resolve({ status: res.statusCode, body }));
    res.on('error', (e) => resolve({ error: e.code || e.message }));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => resolve({ error: e.code || e.message }));
});
function listening() {
  const ports = new Set();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\\n').slice(1)) {
      const cols = line.trim().split(/\\s+/);
      if (cols[3] !== '0A') continue;
      const [addr, port] = cols[1].split(':');
      const loopbackOrAny = /^(0+|0100007F|0+FFFF00000100007F|0+1000000|0+)$/i.test(addr) || addr.endsWith('7F');
      if (loopbackOrAny) ports.add(parseInt(port, 16));
    }
  }
  return [...ports];
}
(async () => {
  const cdp = await get(cdpUrl + '/json/version');
  const ports = listening();
  const answered = [];
  for (const port of ports) {
    for (const path of ['/json/version', '/json/list']) {
      const r = await get('http://127.0.0.1:' + port + path);
      if (r.body && r.body.includes(browserId)) answered.push(port + path);
    }
  }
  process.stdout.write(JSON.stringify({ cdp, scanned: ports.length, answered }));
})();
`;

/** Whether this system lets root (or `user`, in a user namespace) make a network namespace. */
function namespacesPossible(user) {
  const cmd = user ? ['runuser', '-u', user, '--', 'unshare', '--user', '--net', 'true'] : ['unshare', '--net', 'true'];
  return spawnSync(cmd[0], cmd.slice(1)).status === 0;
}

/** The ids in a DevTools `webSocketDebuggerUrl`. */
const browserIdOf = (wsUrl) => wsUrl.split('/').pop();

/** Pids of Chromium processes under `pid` (the session's daemon). */
function chromiumsUnder(pid) {
  return descendants(pid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('--user-data-dir=');
    } catch {
      return false;
    }
  });
}

test("another user reaches neither the CDP endpoint nor Chromium; the owner's Playwright, Puppeteer, chrome-remote-interface and connect() do, and detection sees their pages", async (t) => {
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  const origin = await serve((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(
      `<!doctype html><title>${req.url}</title><p>An ordinary page at ${req.url}, long enough to read as content.</p>`,
    );
  });
  try {
    await withEmulator(async (emu) => {
      const sb = new Sandbox(emu, 'iso');
      const outerTmp = process.env.TMPDIR;
      try {
        const start = await sb.cli(['session', 'start', `${origin.url}/first`, '--browser-session', 'iso']);
        assert.equal(start.code, 0, start.stderr);
        const { cdpUrl, pid } = start.json;
        const get = await sb.cli(['session', 'get', '--browser-session', 'iso']);
        if (get.json.browserIsolation !== 'namespace') {
          const why = sb.log('iso').match(/not isolated.*/)?.[0];
          // Only where the system refuses namespaces is that not a failure.
          assert.ok(!namespacesPossible(), `namespaces work here, yet the session is not isolated: ${why}`);
          return t.skip(`Chromium is not isolated here: ${why}`);
        }

        // Chromium lives in another network namespace than the host's.
        const chromiums = chromiumsUnder(pid);
        assert.ok(chromiums.length > 0, 'the session has Chromium processes');
        const hostNet = readlinkSync('/proc/self/ns/net');
        for (const p of chromiums) assert.notEqual(readlinkSync(`/proc/${p}/ns/net`), hostNet, `Chromium ${p}`);

        const version = await (await fetch(`${cdpUrl}/json/version`)).json();
        const browserId = browserIdOf(version.webSocketDebuggerUrl);
        assert.equal(
          new URL(version.webSocketDebuggerUrl).port,
          new URL(cdpUrl).port,
          'the WebSocket is on the endpoint users got',
        );

        // Another user: closed unanswered at the endpoint, and no port on
        // the host answers for this browser.
        const probe = await nodeAs(user.name, PROBE, [cdpUrl, browserId]);
        assert.ok(probe.cdp.error, `another user's /json/version: ${JSON.stringify(probe.cdp)}`);
        assert.ok(probe.scanned > 0, 'ports were scanned');
        assert.deepEqual(probe.answered, []);

        // The owner: every CDP client, unchanged, against cdpUrl.
        const list = await (await fetch(`${cdpUrl}/json/list`)).json();
        assert.ok(
          list.some((target) => target.url === `${origin.url}/first`),
          JSON.stringify(list),
        );

        const pw = await chromium.connectOverCDP(cdpUrl);
        const pwPage = await pw.contexts()[0].newPage();
        await pwPage.goto(`${origin.url}/playwright`);
        assert.equal(await pwPage.title(), '/playwright');
        await pwPage.close();
        await pw.close();

        const pptr = await puppeteer.connect({ browserURL: cdpUrl });
        const pptrPage = await pptr.newPage();
        await pptrPage.goto(`${origin.url}/puppeteer`);
        assert.equal(await pptrPage.title(), '/puppeteer');
        // A blocked page opened by Puppeteer: the session's detection sees it.
        await pptrPage.goto(emu.siteUrl);
        const seen = await eventually(
          async () => {
            const g = await sb.cli(['session', 'get', '--browser-session', 'iso']);
            return g.json.lastDetection?.lastUrl?.startsWith(emu.siteUrl) ? g.json.lastDetection : null;
          },
          { what: "detection of the Puppeteer page's block", intervalMs: 200 },
        );
        assert.equal(seen.blockStatus, 'blocked');
        await pptrPage.close();
        await pptr.disconnect();

        const { port } = new URL(cdpUrl);
        const targets = await CDP.List({ host: '127.0.0.1', port });
        assert.ok(targets.some((target) => target.type === 'page'));
        const cri = await CDP({ host: '127.0.0.1', port, target: targets.find((target) => target.type === 'page').id });
        const evaluated = await cri.Runtime.evaluate({ expression: '6 * 7' });
        assert.equal(evaluated.result.value, 42);
        await cri.close();

        process.env.TMPDIR = sb.tmp;
        const session = await connect('iso');
        assert.equal(session.cdpUrl, cdpUrl);
        await session.page.goto(`${origin.url}/connect`);
        assert.equal(await session.page.title(), '/connect');
        await session.disconnect();
      } finally {
        if (outerTmp === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = outerTmp;
        await sb.dispose();
      }
    });
  } finally {
    user.remove();
    await origin.close();
  }
});

test("an ordinary user's browser runs in a user and network namespace of its own", async (t) => {
  const user = throwawayUser();
  if (user.skip) return t.skip(user.skip);
  const home = mkdtempSync(join(tmpdir(), 'aluvia-iso-user-'));
  try {
    chownSync(home, user.uid, user.uid);
    chmodSync(home, 0o700);
    const readable = spawnSync('runuser', ['-u', user.name, '--', 'test', '-r', join(root, 'lib', 'index.js')]);
    if (readable.status !== 0) return t.skip('the checkout is not readable by another user');
    const script = `
      const sdk = require(${JSON.stringify(join(root, 'lib', 'index.js'))});
      (async () => {
        const emu = await sdk.startEmulator();
        const client = new sdk.AluviaClient({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl, gatewayHost: emu.gatewayHost,
          gatewayPort: emu.gatewayPort, logLevel: 'silent', startPlaywright: true });
        const conn = await client.start();
        const page = await conn.browserContext.newPage();
        const res = await page.goto(emu.siteUrl);
        const out = { isolation: conn.browserIsolation, status: res.status() };
        await conn.close();
        await emu.stop();
        process.stdout.write(JSON.stringify(out));
      })().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e) })); });`;
    if (!namespacesPossible(user.name)) return t.skip('this system gives ordinary users no user namespaces');
    const out = await nodeAs(user.name, script, [], { HOME: home, TMPDIR: home });
    assert.equal(out.error, undefined);
    assert.equal(out.isolation, 'namespace');
    assert.ok(out.status > 0, 'the page loaded through the proxy');
  } finally {
    user.remove();
    rmSync(home, { recursive: true, force: true });
  }
});

// A page that tries every way around the proxy. Results land in `window.leak`.
const LEAK_PAGE = (stunPort, loopbackUrl) => `<!doctype html><title>leak</title><script>
window.leak = (async () => {
  const candidates = [];
  try {
    const pc = new RTCPeerConnection({ iceServers: [{ urls: 'stun:127.0.0.1:${stunPort}' }] });
    pc.createDataChannel('x');
    pc.onicecandidate = (e) => { if (e.candidate) candidates.push(e.candidate.candidate); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
      setTimeout(resolve, 4000);
    });
    pc.close();
  } catch (e) { candidates.push('error: ' + e); }
  const tryFetch = (url) => fetch(url, { mode: 'no-cors' }).then(() => 'answered', (e) => 'failed');
  return { candidates, loopback: await tryFetch('${loopbackUrl}'), name: await tryFetch('http://leak-check.invalid/') };
})();
</script>`;

for (const mode of ['namespace', 'none']) {
  test(`only the proxy sees the browser's traffic (ALUVIA_BROWSER_ISOLATION=${mode})`, async () => {
    const stun = dgram.createSocket('udp4');
    const stunPackets = [];
    stun.on('message', (_msg, from) => stunPackets.push(from));
    stun.bind(0, '127.0.0.1');
    await once(stun, 'listening');
    const outside = await serve((_req, res) => res.end('outside the rules'), '127.0.0.3');
    const origin = await serve((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(LEAK_PAGE(stun.address().port, `${outside.url}/direct`));
    });
    const tmp = privateTmpdir('aluvia-leak-');
    const outer = process.env.ALUVIA_BROWSER_ISOLATION;
    process.env.ALUVIA_BROWSER_ISOLATION = mode;
    try {
      await withEmulator(async (emu) => {
        const client = new AluviaClient(
          emulatorClientOptions(emu, { startPlaywright: true, blockDetection: { enabled: false } }),
        );
        const conn = await client.start();
        try {
          if (mode === 'none') assert.equal(conn.browserIsolation, 'none');
          const page = await conn.browserContext.newPage();
          await page.goto(`${origin.url}/leak`);
          const leak = await page.evaluate(() => window.leak);
          // No UDP left the browser: no STUN request, no address learnt from one.
          assert.deepEqual(stunPackets, []);
          assert.ok(!leak.candidates.some((c) => / typ srflx /.test(c)), leak.candidates.join('\n'));
          // The loopback fetch and the name both went to the proxy.
          const traffic = client.getTrafficStats();
          const hosts = new Set(traffic.map((e) => e.hostname));
          assert.ok(hosts.has('127.0.0.3'), `the proxy saw the loopback fetch: ${[...hosts]}`);
          assert.ok(hosts.has('leak-check.invalid'), `the proxy got the name to resolve: ${[...hosts]}`);
          assert.equal(leak.loopback, 'answered');
        } finally {
          await conn.close();
        }
      });
    } finally {
      if (outer === undefined) delete process.env.ALUVIA_BROWSER_ISOLATION;
      else process.env.ALUVIA_BROWSER_ISOLATION = outer;
      tmp.restore();
      stun.close();
      await outside.close();
      await origin.close();
    }
  });
}

test('Chromium gets none of our secrets and keeps its temp files in the profile, even when killed', async () => {
  await withEmulator(async (emu) => {
    const sb = new Sandbox(emu, 'env');
    try {
      const start = await sb.cli(['session', 'start', emu.siteUrl, '--browser-session', 'env']);
      assert.equal(start.code, 0, start.stderr);
      const chromiums = chromiumsUnder(start.json.pid);
      assert.ok(chromiums.length > 0, 'the session has Chromium processes');
      const profile = sb.readLock('env').profileDir;
      let browsers = 0;
      // Every process under the daemon: Chromium's and the namespace's factory.
      for (const p of descendants(start.json.pid)) {
        let environ;
        try {
          environ = readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
        } catch {
          continue; // a renderer that exited meanwhile
        }
        assert.ok(!environ.some((v) => v.includes(emu.apiKey)), `Chromium ${p} has the API key in its environment`);
        assert.deepEqual(
          environ.filter((v) => v.startsWith('ALUVIA_')),
          [],
          `Chromium ${p}`,
        );
        // The browser process itself (its children rewrite this memory with
        // their titles): temp files go under the profile.
        const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        if (cmdline.includes('--user-data-dir=') && !cmdline.includes('--type=')) {
          assert.ok(
            environ.includes(`TMPDIR=${join(profile, 't')}`),
            `Chromium ${p}: ${environ.filter((v) => v.startsWith('TMPDIR'))}`,
          );
          browsers += 1;
        }
      }
      assert.equal(browsers, 1, 'one browser process was checked');
      // Force-killed: Chromium dies with its daemon and leaves nothing of its
      // own in TMPDIR; the next command sweeps the profile.
      process.kill(start.json.pid, 'SIGKILL');
      await eventually(() => chromiums.every((p) => !existsSync(`/proc/${p}`)), { what: 'Chromium to exit' });
      assert.deepEqual(
        readdirSync(sb.tmp).filter((f) => f.startsWith('org.chromium.')),
        [],
      );
      await sb.cli(['session', 'list']);
      assert.deepEqual(
        readdirSync(sb.tmp).filter((f) => f.startsWith('aluvia-chromium-')),
        [],
      );
    } finally {
      await sb.dispose();
    }
  });
});
