#!/usr/bin/env node
// The Aluvia story on one machine: the local emulator stands in for the
// Aluvia API and its mobile-IP gateway; a small local site reports the
// address each visitor arrives from.
import http from 'node:http';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { startEmulator, AluviaApi, AluviaClient } = require('../lib/index.js');
const { emulatorExitAddress } = require('../lib/emulator.js');

const { connect } = require('../lib/index.js');
const { execFileSync, spawn } = await import('node:child_process');
const { mkdtempSync, rmSync } = await import('node:fs');
const { tmpdir } = await import('node:os');
const { join } = await import('node:path');
const cliPath = new URL('../bin/aluvia.js', import.meta.url).pathname;

const step = (title) => console.log(`\n== ${title}`);
const show = (label, value) => console.log(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);

// A site that tells each visitor the address it came from.
const site = http.createServer((req, res) => res.end(req.socket.remoteAddress));
site.listen(0, '127.0.0.1');
await once(site, 'listening');
const siteUrl = `http://127.0.0.1:${site.address().port}/`;

step('Start the local emulator (API + gateway)');
const emu = await startEmulator();
show('apiBaseUrl', emu.apiBaseUrl);
show('gateway', `${emu.gatewayHost}:${emu.gatewayPort}`);

const api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
let client;
try {
  step('account.get()');
  show('account', await api.account.get());

  step('account.connections.create({ rules: [] })');
  const conn = await api.account.connections.create({ rules: [], description: 'demo' });
  show('connection_id', conn.connection_id);
  show('rules', conn.rules);

  step('account.connections.patch(id, { rules: ["127.0.0.1"] })');
  const patched = await api.account.connections.patch(conn.connection_id, { rules: ['127.0.0.1'] });
  show('rules', patched.rules);

  step('A conditional poll: request() for the ETag, then get(id, { etag }) → null on 304');
  const raw = await api.request({ method: 'GET', path: `/account/connections/${conn.connection_id}` });
  show('etag', raw.etag);
  show('get(id, { etag })', await api.account.connections.get(conn.connection_id, { etag: raw.etag }));

  step('Start the local smart proxy for this connection');
  client = new AluviaClient({
    apiKey: emu.apiKey,
    apiBaseUrl: emu.apiBaseUrl,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    connectionId: conn.connection_id,
    logLevel: 'silent',
  });
  const proxy = await client.start();
  show('proxy', proxy.url);
  // Plain HTTP through the proxy, one request each: the route is decided per request.
  const { http: agent } = proxy.asNodeAgents();
  const visit = () =>
    new Promise((resolve, reject) => {
      http
        .get(siteUrl, { agent }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });

  show('the site sees (rules ["127.0.0.1"], via the gateway)', await visit());

  step('Rotate the IP: PATCH a new session_id');
  const sessionId = randomUUID();
  await client.updateSessionId(sessionId);
  show('session_id', sessionId);
  show('the site sees', await visit());
  show('expected exit address', emulatorExitAddress(sessionId, null));

  step('Target a geo: updateTargetGeo("us_ca")');
  await client.updateTargetGeo('us_ca');
  show('the site sees', await visit());

  step('Route the site direct again: updateRules([])');
  await client.updateRules([]);
  show('the site sees', await visit());

  step('Traffic carried by the local proxy, per hostname and route');
  show('traffic', client.getTrafficStats());

  await client.stop();
  client = null;

  step('A headless browser on an HTTPS site that blocks datacenter traffic (startPlaywright, autoUnblock)');
  // The real web is HTTPS, and Chromium keeps its TLS connection (h2 here)
  // alive across the reload: the proxy closes it when the route changes.
  // The browser trusts the emulator's certificate only because we ask it to.
  show('site', emu.siteHttpsUrl);
  show('trustSpki', emu.siteSpki);
  const browserClient = browserOnSite({
    autoUnblock: true,
    onDetection: (r) =>
      show(
        `detection (${r.pass} pass)`,
        `${r.blockStatus} score=${r.score} signals=${r.signals.map((x) => x.name).join(',') || '-'}`,
      ),
  });
  const session = await browserClient.start();
  try {
    const tab = await session.browserContext.newPage();
    await tab.goto(emu.siteHttpsUrl);
    for (let i = 0; i < 100 && (await tab.title()) !== 'Aluvia Emulator Shop'; i++)
      await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    show('page title after auto-unblock', await tab.title());
    show('rules now', (await api.account.connections.get(browserClient.connectionId)).rules);
    show(
      'traffic',
      browserClient.getTrafficStats().filter((t) => t.hostname === '127.0.0.1'),
    );
    const visits = await (await fetch(new URL('/_site/visits', emu.siteUrl))).json();
    show(
      'what the site saw',
      visits.filter((v) => v.path === '/').map((v) => `${v.protocol} from ${v.peer}: ${v.status}`),
    );
  } finally {
    await session.close();
  }

  await ladderStory();

  await cliStory();

  step('geos.list()');
  show('geos', (await api.geos.list()).map((g) => g.code).join(', '));

  step('account.usage.get() — computed from what the gateway carried');
  show('usage', await api.account.usage.get());
} finally {
  await client?.stop();
  await emu.stop();
  site.close();
}
console.log('\nDone.');

// The same story through the CLI, as an agent would drive it.
async function cliStory() {
  // A home of its own, so that `aluvia auth` saves the key there (removed at the end).
  const home = mkdtempSync(join(tmpdir(), 'aluvia-demo-home-'));
  try {
    await cliStoryIn(home);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** `aluvia auth`: the URL and code arrive on stderr; "opening" the URL approves the login. */
async function logIn(env) {
  console.log('$ aluvia auth');
  const child = spawn(process.execPath, [cliPath, 'auth'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  const exited = once(child, 'close');
  const url = await new Promise((resolve, reject) => {
    child.stderr.on('data', (c) => {
      stderr += c;
      const found = stderr.match(/(http:\/\/\S+)/);
      if (found && /code: \S+/.test(stderr)) resolve(found[1]);
    });
    child.once('close', () => reject(new Error(`aluvia auth ended early: ${stdout}`)));
  });
  console.log(stderr.trim().replace(/^/gm, '  (stderr) '));
  // What a person does in the browser; the emulator approves on the visit.
  await fetch(url);
  await exited;
  console.log(JSON.stringify(JSON.parse(stdout), null, 2));
}

async function cliStoryIn(home) {
  const env = {
    ...process.env,
    HOME: home,
    // Chromium is looked up before HOME changes.
    ALUVIA_CHROMIUM_PATH:
      process.env.ALUVIA_CHROMIUM_PATH || require('../lib/native.js').sessionBrowser(null, null, false).path,
    ALUVIA_API_BASE_URL: emu.apiBaseUrl,
    ALUVIA_GATEWAY_HOST: emu.gatewayHost,
    ALUVIA_GATEWAY_PORT: String(emu.gatewayPort),
    // Session browsers trust the emulator's HTTPS site, and nothing more.
    ALUVIA_TRUST_SPKI: emu.siteSpki,
  };
  const aluvia = (...args) => {
    console.log(`$ aluvia ${args.join(' ')}`);
    let out;
    try {
      out = execFileSync(process.execPath, [cliPath, ...args], { env, encoding: 'utf8' });
    } catch (err) {
      out = err.stdout;
    }
    const json = JSON.parse(out);
    console.log(JSON.stringify(json, null, 2));
    return json;
  };
  delete env.ALUVIA_API_KEY;
  step('CLI: log in once with a device code (no ALUVIA_API_KEY exported)');
  await logIn(env);
  aluvia('auth', 'status');
  const name = `demo-${process.pid}`;
  step('CLI: start a background session on the protected HTTPS site, with auto-unblock, signing in (a kept profile)');
  const login = new URL('/login?user=demo', emu.siteHttpsUrl).href;
  aluvia('session', 'start', login, '--auto-unblock', '--browser-session', name, '--profile', 'shop');
  try {
    // The first verdict is `blocked` (direct); auto-unblock adds the rule and
    // reloads through the gateway; the next verdict is `clear`.
    let got;
    for (let i = 0; i < 100; i++) {
      got = JSON.parse(
        execFileSync(process.execPath, [cliPath, 'session', 'get', '--browser-session', name], {
          env,
          encoding: 'utf8',
        }),
      );
      if (got.lastDetection?.blockStatus === 'clear' && got.connection?.rules?.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    step('CLI: session get — the block, the rule added, the reload through the gateway, the traffic split');
    aluvia('session', 'get', '--browser-session', name);

    step('CLI: rotate the IP, then target a geo');
    aluvia('session', 'rotate-ip', '--browser-session', name);
    aluvia('session', 'set-geo', 'us_ca', '--browser-session', name);

    step('connect() from code: read the page title of the running session');
    const conn = await connect(name);
    show('connected to', `${conn.sessionName} at ${conn.cdpUrl}`);
    show('page title', await conn.page.title());
    await conn.disconnect();
  } finally {
    step('CLI: close the session');
    aluvia('session', 'close', '--browser-session', name);
  }
  try {
    step('CLI: the profile is kept; a later session with it is still signed in, and closes itself when unused');
    aluvia('profile', 'list');
    aluvia(
      'session',
      'start',
      new URL('/account', emu.siteHttpsUrl).href,
      '--auto-unblock',
      '--browser-session',
      name,
      '--profile',
      'shop',
      '--idle-timeout',
      '10m',
    );
    const conn = await connect(name);
    const cookie = (await conn.browser.contexts()[0].cookies(emu.siteHttpsUrl)).find((c) => c.name === 'login');
    show('login cookie kept from the first session', cookie?.value ?? '(none)');
    await conn.disconnect();
  } finally {
    aluvia('session', 'close', '--browser-session', name);
    aluvia('profile', 'delete', 'shop');
    aluvia('auth', 'logout');
    // The session's log outlives it: the demo leaves nothing behind.
    rmSync(join(tmpdir(), 'aluvia-sdk', `cli-${name}.log`), { force: true });
  }
}

/**
 * The unblock ladder: a stricter site that also blocks the first gateway IP
 * a connection arrives from and serves only us_ca. Rule, then a new IP, then
 * the geo: one reload per rung, in one session, over HTTPS.
 */
async function ladderStory() {
  step('The unblock ladder: rule → rotate → geo on a site that flags the first gateway IP and serves only us_ca');
  await sitePolicy({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  const url = new URL('/ladder', emu.siteHttpsUrl).href;
  let cleared;
  const clear = new Promise((resolve) => (cleared = resolve));
  const ladderClient = browserOnSite({
    autoUnblock: true,
    unblockSteps: ['rule', 'rotate', 'geo'],
    unblockGeos: ['us_ca'],
    onDetection: (r) => {
      const action = r.unblock ? ` → ${r.unblock.step}${r.unblock.geo ? ` ${r.unblock.geo}` : ''}, reload` : '';
      show('detection', `${r.blockStatus}${action}`);
      if (r.blockStatus === 'clear') cleared();
    },
  });
  const session = await ladderClient.start();
  try {
    const tab = await session.browserContext.newPage();
    await tab.goto(url);
    await clear;
    show('page title', await tab.title());
    const visits = await (await fetch(new URL('/_site/visits', emu.siteUrl))).json();
    show(
      'what the site saw',
      visits.filter((v) => v.path === '/ladder').map((v) => `${v.protocol} from ${v.peer}: ${v.refused ?? 'served'}`),
    );
    const conn = await api.account.connections.get(ladderClient.connectionId);
    show('connection now', { rules: conn.rules, session_id: conn.session_id, target_geo: conn.target_geo });
  } finally {
    await session.close();
    await sitePolicy({ flagFirstExit: false, allowedGeos: null });
  }
}

/** A client with a headless browser that trusts the emulator's HTTPS site, detection as given. */
function browserOnSite(blockDetection) {
  return new AluviaClient({
    apiKey: emu.apiKey,
    apiBaseUrl: emu.apiBaseUrl,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    logLevel: 'silent',
    startPlaywright: true,
    trustSpki: [emu.siteSpki],
    blockDetection,
  });
}

/** The emulator site's stricter rules (admin endpoint). */
async function sitePolicy(policy) {
  await fetch(`${emu.apiBaseUrl.replace(/\/v1$/, '')}/_emulator/site`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${emu.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(policy),
  });
}
