// The real web is HTTPS, and browsers keep their TLS connections (often one
// h2 connection per host) alive across reloads. These tests drive real
// Chromium against HTTPS sites on loopback — the emulator's (h2 and
// HTTP/1.1 by ALPN) and one of our own that speaks HTTP/1.1 only — and check
// that every route change reaches the open connections: auto-unblock, session
// id and geo updates, and the CLI's rotate-ip/set-geo on a running session.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sdk, emulatorClientOptions, eventually, require, localhostCertificate, listenLoopback } from './helpers.mjs';
import { Sandbox } from './sessions.mjs';

const { AluviaClient, AluviaApi } = sdk;
const { emulatorExitAddress } = require('../lib/emulator.js');

let emu;
let api;
let h1site;

// Auto-unblock takes its rules lock in {tmpdir}/aluvia-sdk; Chromium
// profiles live in tmpdir too: all of it goes in after().
const privateTmp = mkdtempSync(join(tmpdir(), 'aluvia-https-'));
const outerTmp = process.env.TMPDIR;
process.env.TMPDIR = privateTmp;

const until = (check, what, timeoutMs = 20_000) => eventually(check, { what, timeoutMs, intervalMs: 50 });

/**
 * An HTTPS site of our own that speaks HTTP/1.1 only (ALPN offers nothing
 * else), protected like the emulator's: direct visitors (127.0.0.1) get a
 * Cloudflare-style challenge, visitors from a gateway address the page.
 */
async function startHttp1Site() {
  const { key, cert, spki } = localhostCertificate(privateTmp);
  const visits = [];
  const server = https.createServer({ key, cert, ALPNProtocols: ['http/1.1'] }, (req, res) => {
    const peer = req.socket.remoteAddress;
    visits.push({ path: req.url, peer, protocol: `HTTP/${req.httpVersion}` });
    if (peer === '127.0.0.1') {
      res.writeHead(403, { 'content-type': 'text/html', 'cf-mitigated': 'challenge', server: 'cloudflare' });
      res.end('<!doctype html><title>Just a moment...</title><form id="challenge-form"></form>');
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        `<!doctype html><title>HTTP/1.1 shop</title><p id="visitor">${peer}</p><p>${'A plain page. '.repeat(60)}</p>`,
      );
    }
  });
  const { port, close } = await listenLoopback(server);
  return {
    url: `https://127.0.0.1:${port}/`,
    spki,
    visits,
    close,
  };
}

before(async () => {
  emu = await sdk.startEmulator();
  api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
  h1site = await startHttp1Site();
});

after(async () => {
  await h1site?.close();
  await emu?.stop();
  if (outerTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outerTmp;
  rmSync(privateTmp, { recursive: true, force: true });
});

/** The emulator site's visits to `path` since `from` (an earlier length). */
async function siteVisits(path = '/') {
  const res = await fetch(new URL('/_site/visits', emu.siteUrl));
  return (await res.json()).filter((v) => v.path === path);
}

async function withBrowser(extra, fn) {
  const client = new AluviaClient(
    emulatorClientOptions(emu, { startPlaywright: true, trustSpki: [emu.siteSpki, h1site.spki], ...extra }),
  );
  const connection = await client.start();
  try {
    return await fn({ client, tab: await connection.browserContext.newPage() });
  } finally {
    await connection.close();
  }
}

/** The whole unblock story on one HTTPS site; `visits()` lists its visits to `/`. */
async function unblockStory(url, visits, protocol) {
  const results = [];
  await withBrowser(
    { blockDetection: { autoUnblock: true, onDetection: (r) => results.push(r) } },
    async ({ client, tab }) => {
      const before = (await visits()).length;
      await tab.goto(url);
      await until(() => results.find((r) => r.blockStatus === 'clear'), 'a clear result after the reload');
      const blocked = results.find((r) => r.blockStatus === 'blocked');
      assert.ok(blocked, 'the direct visit was detected as blocked');
      assert.ok(
        results.every((r) => !r.persistentBlock),
        JSON.stringify(results),
      );
      assert.deepEqual(client.getBlockedHostnames(), []);
      const seen = (await visits()).slice(before);
      assert.equal(seen.length, 2, `one direct visit and exactly one reload: ${JSON.stringify(seen)}`);
      assert.equal(seen[0].peer, '127.0.0.1');
      assert.notEqual(seen[1].peer, '127.0.0.1', 'the reload reached the site from a gateway address');
      assert.equal(seen[1].protocol, protocol);
      assert.deepEqual((await api.account.connections.get(client.connectionId)).rules, ['127.0.0.1']);
      const gateway = client.getTrafficStats().find((t) => t.hostname === '127.0.0.1' && t.route === 'gateway');
      assert.ok(gateway?.tunnels >= 1, 'the reload rode a new tunnel through the gateway');
    },
  );
}

test('HTTPS over h2: blocked direct, rule added, one reload through the gateway, clear', async () => {
  await unblockStory(emu.siteHttpsUrl, () => siteVisits('/'), 'HTTP/2.0');
});

test('HTTPS over HTTP/1.1: the same story', async () => {
  await unblockStory(h1site.url, async () => h1site.visits.filter((v) => v.path === '/'), 'HTTP/1.1');
});

test('HTTPS: after each session id or geo change the next load leaves from the new address', async () => {
  await withBrowser({ blockDetection: { enabled: false } }, async ({ client, tab }) => {
    await client.updateRules(['127.0.0.1']);
    const peerOfNextLoad = async (load) => {
      const before = (await siteVisits('/rotate')).length;
      await load();
      const seen = (await siteVisits('/rotate')).slice(before);
      assert.equal(seen.length, 1, JSON.stringify(seen));
      assert.equal(seen[0].protocol, 'HTTP/2.0');
      return seen[0].peer;
    };
    const url = new URL('/rotate', emu.siteHttpsUrl).href;
    const first = await peerOfNextLoad(() => tab.goto(url));
    const conn = await api.account.connections.get(client.connectionId);
    assert.equal(first, emulatorExitAddress(conn.session_id, conn.target_geo));

    const peers = [first];
    const s1 = randomUUID();
    await client.updateSessionId(s1);
    peers.push(await peerOfNextLoad(() => tab.reload()));
    assert.equal(peers.at(-1), emulatorExitAddress(s1, null));
    await client.updateTargetGeo('us_ca');
    peers.push(await peerOfNextLoad(() => tab.goto(url)));
    assert.equal(peers.at(-1), emulatorExitAddress(s1, 'us_ca'));
    const s2 = randomUUID();
    await client.updateSessionId(s2);
    peers.push(await peerOfNextLoad(() => tab.reload()));
    assert.equal(peers.at(-1), emulatorExitAddress(s2, 'us_ca'));
    assert.equal(new Set(peers).size, 4, `four loads, four addresses: ${peers}`);
  });
});

test('a CLI session on HTTPS: auto-unblock, then rotate-ip and set-geo reach the open browser', async () => {
  const { chromium } = require('playwright-core');
  const sb = new Sandbox(emu, 'https');
  sb.env.ALUVIA_TRUST_SPKI = emu.siteSpki;
  let browser;
  try {
    const url = new URL('/cli', emu.siteHttpsUrl).href;
    const r = await sb.cli(['session', 'start', url, '--auto-unblock', '--browser-session', 'tls']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const get = await eventually(
      async () => {
        const g = await sb.cli(['session', 'get']);
        return g.json.lastDetection?.blockStatus === 'clear' ? g : null;
      },
      { what: 'a clear result after the unblock reload', timeoutMs: 30_000, intervalMs: 300 },
    );
    assert.equal(get.json.lastDetection.persistentBlock, false);
    const seen = await siteVisits('/cli');
    assert.equal(seen.length, 2, JSON.stringify(seen));
    assert.equal(seen[1].protocol, 'HTTP/2.0');
    assert.notEqual(seen[1].peer, '127.0.0.1');

    browser = await chromium.connectOverCDP(get.json.cdpUrl);
    const tab = browser
      .contexts()[0]
      .pages()
      .find((p) => p.url() === url);
    assert.ok(tab, 'the session page');
    // The daemon takes a CLI change on its next poll; from then on every
    // load leaves from the new address (before, the open h2 connection kept
    // the old one for as long as it lived).
    const leavesFrom = async (expected, what) =>
      eventually(
        async () => {
          const before = (await siteVisits('/cli')).length;
          await tab.reload();
          const after = (await siteVisits('/cli')).slice(before);
          return after.at(-1)?.peer === expected;
        },
        { what, timeoutMs: 15_000, intervalMs: 200 },
      );
    const rotated = await sb.cli(['session', 'rotate-ip']);
    assert.equal(rotated.code, 0, rotated.stdout);
    await leavesFrom(emulatorExitAddress(rotated.json.sessionId, null), 'loads from the rotated address');
    const geo = await sb.cli(['session', 'set-geo', 'us_ny']);
    assert.equal(geo.code, 0, geo.stdout);
    await leavesFrom(emulatorExitAddress(rotated.json.sessionId, 'us_ny'), 'loads from the new geo address');
  } finally {
    await browser?.close().catch(() => {});
    await sb.dispose();
  }
});
