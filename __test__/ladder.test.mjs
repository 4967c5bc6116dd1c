// The unblock ladder (04-detection, "the unblock ladder"): rule, then a new
// IP, then another geo, one reload per rung, over HTTPS (h2 from the
// emulator's site, HTTP/1.1 from a site of our own that applies the
// emulator's stricter rules), in-process and in a CLI session. The emulator's
// stricter site refuses the first session id a connection arrives with (a
// flagged IP, cleared only by rotating) and every geo but its allowed list
// (cleared only by setting one), so each rung is what clears the page.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  sdk,
  admin,
  emulatorClientOptions,
  eventually,
  require,
  localhostCertificate,
  listenLoopback,
} from './helpers.mjs';
import { Sandbox } from './sessions.mjs';

const { AluviaClient, AluviaApi } = sdk;
const { emulatorExitAddress } = require('../lib/emulator.js');

let emu;
let api;
let h1site;
let plain;

// Auto-unblock's rules lock and Chromium's profiles live under TMPDIR.
const privateTmp = mkdtempSync(join(tmpdir(), 'aluvia-ladder-'));
const outerTmp = process.env.TMPDIR;
process.env.TMPDIR = privateTmp;

const until = (check, what, timeoutMs = 30_000) => eventually(check, { what, timeoutMs, intervalMs: 50 });

/** Sets the emulator site's stricter rules (every connection's first exit is forgotten). */
async function strict(policy) {
  const r = await admin(emu, 'PUT', '/_emulator/site', { flagFirstExit: false, allowedGeos: null, ...policy });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

/**
 * An HTTPS site of our own that speaks HTTP/1.1 only, on `localhost`. It
 * challenges direct visitors and asks the emulator for its verdict on every
 * gateway visitor (by the visitor's address and port), so the stricter rules
 * apply to it too.
 */
async function startHttp1Site() {
  const { key, cert, spki } = localhostCertificate(privateTmp);
  const visits = [];
  const server = https.createServer({ key, cert, ALPNProtocols: ['http/1.1'] }, async (req, res) => {
    const peer = req.socket.remoteAddress;
    let refused = 'direct';
    if (peer !== '127.0.0.1') {
      const query = `peer=${encodeURIComponent(`${peer}:${req.socket.remotePort}`)}`;
      refused = (await admin(emu, 'GET', `/_emulator/site/verdict?${query}`)).body.refused;
    }
    visits.push({ path: req.url, peer, protocol: `HTTP/${req.httpVersion}`, refused });
    if (refused) {
      res.writeHead(403, { 'content-type': 'text/html', 'cf-mitigated': 'challenge', server: 'cloudflare' });
      res.end('<!doctype html><title>Just a moment...</title><form id="challenge-form"></form>');
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><title>HTTP/1.1 shop</title><p>${peer}</p><p>${'A plain page. '.repeat(60)}</p>`);
    }
  });
  const { port, close } = await listenLoopback(server);
  return {
    url: `https://localhost:${port}/`,
    spki,
    visits,
    close,
  };
}

/** A plain page server on `localhost` that counts its TCP connections and keeps them alive. */
async function startPlainSite() {
  const requests = [];
  let connections = 0;
  const server = http.createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
    requests.push({ path: req.url, peer: req.socket.remoteAddress, socket: req.socket.id });
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><title>Garden notes</title><p>${'An ordinary page about gardens. '.repeat(20)}</p>`);
  });
  server.on('connection', (socket) => {
    connections += 1;
    socket.id = connections;
  });
  const { port, close } = await listenLoopback(server);
  return {
    url: `http://localhost:${port}/`,
    requests,
    connections: () => connections,
    close,
  };
}

before(async () => {
  emu = await sdk.startEmulator();
  api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
  h1site = await startHttp1Site();
  plain = await startPlainSite();
});

after(async () => {
  await plain?.close();
  await h1site?.close();
  await emu?.stop();
  if (outerTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outerTmp;
  rmSync(privateTmp, { recursive: true, force: true });
});

beforeEach(() => strict({}));

/** The emulator site's visits to `path`. */
async function siteVisits(path) {
  const res = await fetch(new URL('/_site/visits', emu.siteUrl));
  return (await res.json()).filter((v) => v.path === path);
}

async function withLadder(blockDetection, fn) {
  const results = [];
  const client = new AluviaClient(
    emulatorClientOptions(emu, {
      startPlaywright: true,
      trustSpki: [emu.siteSpki, h1site.spki],
      blockDetection: { autoUnblock: true, onDetection: (r) => results.push(r), ...blockDetection },
    }),
  );
  const connection = await client.start();
  try {
    return await fn({ client, results, context: connection.browserContext });
  } finally {
    await connection.close();
  }
}

const notes = (results, hostname) => results.filter((r) => r.hostname === hostname && r.unblock).map((r) => r.unblock);

/**
 * One ladder on one HTTPS page: `expected` is the refusal of each visit
 * (the direct one first, then one per reload) with null for the clear one,
 * `peers(conn)` the gateway address of each reload.
 */
async function climb({ url, hostname, visits, protocol, steps, geos, expectedNotes, expectedVisits, peers }) {
  await withLadder({ unblockSteps: steps, unblockGeos: geos }, async ({ client, results, context }) => {
    const before = (await visits()).length;
    const tab = await context.newPage();
    await tab.goto(url);
    await until(() => results.find((r) => r.hostname === hostname && r.blockStatus === 'clear'), 'a clear result');
    const seen = (await visits()).slice(before);
    assert.deepEqual(
      seen.map((v) => v.refused ?? null),
      expectedVisits,
      `one direct visit, then exactly one reload per rung: ${JSON.stringify(seen)}`,
    );
    assert.equal(seen[0].peer, '127.0.0.1');
    for (const v of seen) assert.equal(v.protocol, protocol);
    const conn = await api.account.connections.get(client.connectionId);
    assert.deepEqual(
      seen.slice(1).map((v) => v.peer),
      peers(conn),
      'each reload left from the address its rung set',
    );
    assert.deepEqual(notes(results, hostname), expectedNotes);
    const clear = results.find((r) => r.hostname === hostname && r.blockStatus === 'clear');
    assert.equal(clear.unblock, null);
    assert.ok(results.every((r) => !r.persistentBlock));
    assert.deepEqual(client.getBlockedHostnames(), []);
  });
}

const rule = { step: 'rule', attempt: 1 };

test('h2: rule, then rotate, then geo (the second geo) clears a site that flags the first IP and serves one geo', async () => {
  await strict({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  const first = null;
  await climb({
    url: new URL('/ladder', emu.siteHttpsUrl).href,
    hostname: '127.0.0.1',
    visits: () => siteVisits('/ladder'),
    protocol: 'HTTP/2.0',
    steps: ['rule', 'rotate', 'geo'],
    geos: ['us_ny', 'us_ca'],
    expectedVisits: ['direct', 'flagged', 'geo', 'geo', null],
    expectedNotes: [
      rule,
      { step: 'rotate', attempt: 2 },
      { step: 'geo', attempt: 3, geo: 'us_ny' },
      { step: 'geo', attempt: 4, geo: 'us_ca' },
    ],
    peers: (conn) => {
      assert.equal(conn.target_geo, 'us_ca');
      assert.notEqual(conn.session_id, first);
      const s = conn.session_id;
      return [
        emulatorExitAddress(first, null),
        emulatorExitAddress(s, null),
        ...['us_ny', 'us_ca'].map((g) => emulatorExitAddress(s, g)),
      ];
    },
  });
});

test('h2: rotate alone clears a flagged IP (the geo is never touched)', async () => {
  await strict({ flagFirstExit: true });
  await climb({
    url: new URL('/rotate-only', emu.siteHttpsUrl).href,
    hostname: '127.0.0.1',
    visits: () => siteVisits('/rotate-only'),
    protocol: 'HTTP/2.0',
    steps: ['rule', 'rotate', 'geo'],
    geos: ['us_ca'],
    expectedVisits: ['direct', 'flagged', null],
    expectedNotes: [rule, { step: 'rotate', attempt: 2 }],
    peers: (conn) => {
      assert.equal(conn.target_geo, null, 'the ladder stopped at rotate');
      return [emulatorExitAddress(null, null), emulatorExitAddress(conn.session_id, null)];
    },
  });
});

test('h2: geo alone clears a site that serves one geo (the IP is never rotated)', async () => {
  await strict({ allowedGeos: ['us_ca'] });
  await climb({
    url: new URL('/geo-only', emu.siteHttpsUrl).href,
    hostname: '127.0.0.1',
    visits: () => siteVisits('/geo-only'),
    protocol: 'HTTP/2.0',
    steps: ['rule', 'geo'],
    geos: ['us_ca'],
    expectedVisits: ['direct', 'geo', null],
    expectedNotes: [rule, { step: 'geo', attempt: 2, geo: 'us_ca' }],
    peers: (conn) => {
      assert.equal(conn.session_id, null, 'no rotation');
      return [emulatorExitAddress(null, null), emulatorExitAddress(null, 'us_ca')];
    },
  });
});

test('h2: with rule first in a longer ladder, a rule that clears ends it', async () => {
  await climb({
    url: new URL('/rule-only', emu.siteHttpsUrl).href,
    hostname: '127.0.0.1',
    visits: () => siteVisits('/rule-only'),
    protocol: 'HTTP/2.0',
    steps: ['rule', 'rotate'],
    geos: [],
    expectedVisits: ['direct', null],
    expectedNotes: [rule],
    peers: (conn) => {
      assert.equal(conn.session_id, null);
      return [emulatorExitAddress(null, null)];
    },
  });
});

test('HTTP/1.1: the whole ladder on a site of our own under the same rules', async () => {
  await strict({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  await climb({
    url: new URL('/ladder', h1site.url).href,
    hostname: 'localhost',
    visits: async () => h1site.visits.filter((v) => v.path === '/ladder'),
    protocol: 'HTTP/1.1',
    steps: ['rule', 'rotate', 'geo'],
    geos: ['us_ca'],
    expectedVisits: ['direct', 'flagged', 'geo', null],
    expectedNotes: [rule, { step: 'rotate', attempt: 2 }, { step: 'geo', attempt: 3, geo: 'us_ca' }],
    peers: (conn) => [
      emulatorExitAddress(null, null),
      emulatorExitAddress(conn.session_id, null),
      emulatorExitAddress(conn.session_id, 'us_ca'),
    ],
  });
});

test('an exhausted ladder: persistentBlock, no reload after it; clearBlockedHostnames() starts it again', async () => {
  // Rotating would clear this site, but the ladder has no rotate rung.
  await strict({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  const path = '/exhausted';
  await withLadder({ unblockSteps: ['rule', 'geo'], unblockGeos: ['us_ca'] }, async ({ client, results, context }) => {
    const tab = await context.newPage();
    await tab.goto(new URL(path, emu.siteHttpsUrl).href);
    const persistent = await until(() => results.find((r) => r.persistentBlock), 'a persistent block');
    assert.equal(persistent.unblock, null);
    assert.deepEqual(notes(results, '127.0.0.1'), [rule, { step: 'geo', attempt: 2, geo: 'us_ca' }]);
    assert.deepEqual(client.getBlockedHostnames(), ['127.0.0.1']);
    // Another host's page, loaded after the persistent result, has its
    // verdict: any reload of the blocked page would have been issued by then.
    const other = await context.newPage();
    await other.goto(plain.url);
    await until(() => results.find((r) => r.hostname === 'localhost'), "the other page's verdict");
    const seen = await siteVisits(path);
    assert.deepEqual(
      seen.map((v) => v.refused),
      ['direct', 'flagged', 'flagged'],
      `one reload per rung, none after the ladder ran out: ${JSON.stringify(seen)}`,
    );
    // A blocked reload by hand stays persistent: no rung, no reload.
    await tab.reload();
    await until(() => results.filter((r) => r.persistentBlock).length >= 2, 'a second persistent result');
    assert.equal((await siteVisits(path)).length, 4);
    // Reset: the next block climbs again, from the first rung not in
    // effect. Both are (the host goes through the gateway, us_ca is the
    // geo), so it is persistent at once, without a reload.
    client.clearBlockedHostnames();
    assert.deepEqual(client.getBlockedHostnames(), []);
    const before = results.length;
    await tab.reload();
    await until(() => results.slice(before).find((r) => r.persistentBlock), 'the ladder ran out again');
    assert.ok(results.slice(before).every((r) => r.unblock === null));
    assert.equal((await siteVisits(path)).length, 5, 'the reload by hand, and no other');
  });
});

test('a page on another host keeps its direct route and its open connection while a ladder runs', async () => {
  await strict({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  await withLadder(
    { unblockSteps: ['rule', 'rotate', 'geo'], unblockGeos: ['us_ca'] },
    async ({ client, results, context }) => {
      const other = await context.newPage();
      await other.goto(plain.url);
      const connectionsBefore = plain.connections();
      const tab = await context.newPage();
      await tab.goto(new URL('/while-other', emu.siteHttpsUrl).href);
      await until(() => results.find((r) => r.hostname === '127.0.0.1' && r.blockStatus === 'clear'), 'clear');
      assert.equal(notes(results, '127.0.0.1').length, 3, 'rule, rotate and geo ran');
      // The other page's next request rides the connection it had, direct.
      const status = await other.evaluate(async () => (await fetch('/again', { cache: 'no-store' })).status);
      assert.equal(status, 200);
      const again = plain.requests.findLast((r) => r.path === '/again');
      assert.equal(again.peer, '127.0.0.1', 'still direct');
      assert.equal(plain.connections(), connectionsBefore, 'no new connection: the open one was kept');
      assert.equal(again.socket, plain.requests.filter((r) => r.path === '/').at(-1).socket);
      assert.ok(
        client.getTrafficStats().every((t) => t.hostname !== 'localhost' || t.route === 'direct'),
        'localhost never went through the gateway',
      );
    },
  );
});

test('blocks on two hosts at once: their rungs never interleave', async () => {
  // One connection for both hosts: the first one rotated clears the other's
  // flagged IP too, so the second host needs its rule only, provided its
  // rung waits for the first host's verdicts.
  await strict({ flagFirstExit: true });
  await withLadder({ unblockSteps: ['rule', 'rotate'] }, async ({ client, results, context }) => {
    const [a, b] = await Promise.all([context.newPage(), context.newPage()]);
    const urls = { '127.0.0.1': new URL('/pair', emu.siteHttpsUrl).href, localhost: new URL('/pair', h1site.url).href };
    await Promise.all([a.goto(urls['127.0.0.1']), b.goto(urls.localhost)]);
    const hosts = Object.keys(urls);
    await until(
      () => hosts.every((h) => results.find((r) => r.hostname === h && r.blockStatus === 'clear')),
      'both hosts clear',
    );
    const ladders = hosts.map((h) => notes(results, h).map((n) => n.step));
    assert.deepEqual(
      [...ladders].sort((x, y) => y.length - x.length),
      [['rule', 'rotate'], ['rule']],
      JSON.stringify(ladders),
    );
    const conn = await api.account.connections.get(client.connectionId);
    assert.notEqual(conn.session_id, null);
    const refusals = [
      (await siteVisits('/pair')).map((v) => v.refused ?? null),
      h1site.visits.filter((v) => v.path === '/pair').map((v) => v.refused ?? null),
    ];
    const expected = ladders.map((steps) => (steps.length === 2 ? ['direct', 'flagged', null] : ['direct', null]));
    assert.deepEqual(refusals, expected, 'each reload was the first request on the route its own rung set');
  });
});

test('bad ladders are refused before anything starts', async () => {
  const client = (blockDetection) =>
    new AluviaClient(emulatorClientOptions(emu, { startPlaywright: true, blockDetection }));
  assert.throws(() => client({ autoUnblock: true, unblockSteps: ['rule', 'jump'] }), {
    message: "Invalid unblockSteps: unknown step 'jump'. Use rule, rotate or geo.",
  });
  assert.throws(() => client({ unblockSteps: [] }), { message: /unblockSteps: it is empty/ });
  assert.throws(() => client({ unblockSteps: ['rotate', 'rotate'] }), { message: /'rotate' is listed twice/ });
  assert.throws(() => client({ unblockSteps: ['geo'] }), { message: /needs unblockGeos/ });
  assert.throws(() => client({ unblockGeos: ['us_ca'] }), { message: /has no 'geo' step/ });
  assert.throws(() => client({ unblockSteps: 'rule' }), TypeError);
  // Geos are the API's to know: start() asks, and starts nothing when one is unknown.
  const before = (await api.account.connections.list()).length;
  const c = client({ autoUnblock: true, unblockSteps: ['geo'], unblockGeos: ['us_ca', 'atlantis'] });
  await assert.rejects(c.start(), {
    message: "Invalid unblockGeos: 'atlantis' is not one of the API's geos (GET /geos).",
  });
  assert.equal((await api.account.connections.list()).length, before, 'no connection was created');
  assert.equal(c.connectionId, undefined);
  await c.stop();
});

test('the emulator takes its stricter rules at start and at runtime, and checks them', async () => {
  const strictEmu = await sdk.startEmulator({ flagFirstExit: true, allowedGeos: ['us_ca', 'gb'], site: true });
  try {
    const got = await admin(strictEmu, 'GET', '/_emulator/site');
    assert.deepEqual(got.body, { flagFirstExit: true, allowedGeos: ['us_ca', 'gb'] });
    const bad = await admin(strictEmu, 'PUT', '/_emulator/site', { allowedGeos: ['mars'], extra: 1 });
    assert.equal(bad.status, 422);
    assert.deepEqual(Object.keys(bad.body.error.details).sort(), ['allowedGeos', 'extra']);
    const put = await admin(strictEmu, 'PUT', '/_emulator/site', { allowedGeos: null });
    assert.deepEqual(put.body, { flagFirstExit: true, allowedGeos: null });
    const verdict = await admin(strictEmu, 'GET', '/_emulator/site/verdict?peer=nonsense');
    assert.equal(verdict.status, 422);
  } finally {
    await strictEmu.stop();
  }
  await assert.rejects(sdk.startEmulator({ allowedGeos: ['mars'] }), /allowedGeos: 'mars'/);
  // The CLI's flags, in its JSON line's settings.
  const r = await runEmulatorCli(['--flag-first-exit', '--allowed-geos', 'us_ca,us_ny']);
  assert.deepEqual(r, { flagFirstExit: true, allowedGeos: ['us_ca', 'us_ny'] });
});

/** Starts `aluvia emulator` with `flags`, reads its site rules, stops it. */
async function runEmulatorCli(flags) {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'bin', 'aluvia.js'), 'emulator', ...flags], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    let line = '';
    for await (const chunk of child.stdout) {
      line += chunk;
      if (line.includes('\n')) break;
    }
    const settings = JSON.parse(line);
    return (await admin(settings, 'GET', '/_emulator/site')).body;
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
}

test('a CLI session on HTTPS climbs the ladder; session get shows unblockLog; the log names the rung', async () => {
  await strict({ flagFirstExit: true, allowedGeos: ['us_ca'] });
  const sb = new Sandbox(emu, 'ladder');
  sb.env.ALUVIA_TRUST_SPKI = emu.siteSpki;
  try {
    const url = new URL('/cli-ladder', emu.siteHttpsUrl).href;
    const start = ['session', 'start', url, '--browser-session', 'ladder'];
    const r = await sb.cli([...start, '--unblock-steps', 'rule,rotate,geo', '--unblock-geos', 'us_ny,us_ca']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.json.autoUnblock, true, '--unblock-steps implies --auto-unblock');
    const get = await eventually(
      async () => {
        const g = await sb.cli(['session', 'get']);
        return g.json.lastDetection?.blockStatus === 'clear' && g.json.unblockLog?.at(-1)?.outcome === 'cleared'
          ? g
          : null;
      },
      { what: 'a clear page and its cleared rung', timeoutMs: 60_000, intervalMs: 300 },
    );
    const log = get.json.unblockLog;
    assert.deepEqual(
      log.map(({ hostname, step, geo, outcome }) => ({ hostname, step, geo, outcome })),
      [
        { hostname: '127.0.0.1', step: 'rule', geo: undefined, outcome: 'blocked' },
        { hostname: '127.0.0.1', step: 'rotate', geo: undefined, outcome: 'blocked' },
        { hostname: '127.0.0.1', step: 'geo', geo: 'us_ny', outcome: 'blocked' },
        { hostname: '127.0.0.1', step: 'geo', geo: 'us_ca', outcome: 'cleared' },
      ],
    );
    for (const entry of log) assert.ok(!Number.isNaN(Date.parse(entry.at)), entry.at);
    assert.equal(get.json.lastDetection.persistentBlock, false);
    const seen = await siteVisits('/cli-ladder');
    assert.deepEqual(
      seen.map((v) => v.refused ?? null),
      ['direct', 'flagged', 'geo', 'geo', null],
    );
    assert.ok(seen.every((v) => v.protocol === 'HTTP/2.0'));
    const conn = get.json.connection;
    assert.equal(seen.at(-1).peer, emulatorExitAddress(conn.session_id, 'us_ca'));
    const sessionLog = sb.log('ladder');
    const successes = sessionLog.split('\n').filter((l) => l.includes('is clear after the'));
    assert.deepEqual(
      successes.map((l) => l.slice(l.indexOf('auto-unblock:'))),
      ['auto-unblock: 127.0.0.1 is clear after the geo us_ca rung'],
    );
    // No secret in what an agent or the log can read.
    const lockText = readFileSync(sb.lockPath('ladder'), 'utf8');
    for (const secret of [emu.apiKey, conn.proxy_password]) {
      assert.ok(!lockText.includes(secret));
      assert.ok(!sessionLog.includes(secret));
      assert.ok(!JSON.stringify(log).includes(secret));
    }
  } finally {
    await sb.dispose();
  }
});

test('the CLI and MCP refuse bad ladders before a daemon is spawned', async () => {
  const sb = new Sandbox(emu, 'ladder-bad');
  try {
    const url = emu.siteHttpsUrl;
    const cases = [
      [['--unblock-steps', 'rule,hop'], "Invalid --unblock-steps: unknown step 'hop'. Use rule, rotate or geo."],
      [['--unblock-steps', ','], 'Invalid --unblock-steps: it is empty. Use rule, rotate or geo.'],
      [['--unblock-steps', 'geo,geo', '--unblock-geos', 'us'], "Invalid --unblock-steps: 'geo' is listed twice."],
      [
        ['--unblock-steps', 'geo'],
        "Invalid --unblock-steps: the 'geo' step needs --unblock-geos, the geo codes to try.",
      ],
      [['--unblock-geos', 'us_ca'], "Invalid --unblock-geos: --unblock-steps has no 'geo' step to use them."],
      [
        ['--unblock-steps', 'rule,geo', '--unblock-geos', 'us_ca,narnia'],
        "Invalid --unblock-geos: 'narnia' is not one of the API's geos (GET /geos).",
      ],
      [
        ['--unblock-steps', 'rule', '--disable-block-detection'],
        'Cannot use --unblock-steps or --unblock-geos with --disable-block-detection.',
      ],
    ];
    for (const [flags, error] of cases) {
      const r = await sb.cli(['session', 'start', url, ...flags]);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.json.error, error);
    }
    assert.deepEqual(sb.locks(), [], 'no session was claimed');
    // MCP: the same handler, with errors in parameter terms.
    const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
    const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [join(import.meta.dirname, '..', 'bin', 'aluvia-mcp.js')],
      env: { ...process.env, ...sb.env },
      stderr: 'pipe',
    });
    const mcp = new Client({ name: 'aluvia-test', version: '1.0.0' });
    await mcp.connect(transport);
    try {
      const { tools } = await mcp.listTools();
      const props = tools.find((t) => t.name === 'session_start').inputSchema.properties;
      assert.equal(props.unblockSteps.type, 'string');
      assert.equal(props.unblockGeos.type, 'string');
      const call = (args) => mcp.callTool({ name: 'session_start', arguments: { url, ...args } });
      const geosOnly = await call({ unblockGeos: 'us_ca' });
      assert.equal(geosOnly.isError, true);
      assert.equal(
        JSON.parse(geosOnly.content[0].text).error,
        "Invalid 'unblockGeos': 'unblockSteps' has no 'geo' step to use them.",
      );
      const unknown = await call({ unblockSteps: 'rule,geo', unblockGeos: 'atlantis' });
      assert.equal(
        JSON.parse(unknown.content[0].text).error,
        "Invalid 'unblockGeos': 'atlantis' is not one of the API's geos (GET /geos).",
      );
    } finally {
      await mcp.close();
    }
  } finally {
    await sb.dispose();
  }
});
