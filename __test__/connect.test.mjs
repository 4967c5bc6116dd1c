// connect() from another process: every call runs in a child Node process
// with the sandbox's TMPDIR (the lock directory follows os.tmpdir()).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sdk, serve, root, runNode } from './helpers.mjs';
import { Sandbox, alive, deadPid, pageHandler, startOf } from './sessions.mjs';

let emu;
let site;
let sb;
let closedPort;

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve(pageHandler);
  sb = new Sandbox(emu, 'connect');
  const tmp = await serve(() => {});
  closedPort = tmp.port;
  await tmp.close();
});

after(async () => {
  await sb?.dispose();
  await site?.close();
  await emu?.stop();
});

/** Runs `body` (an async function body with `connect` in scope) in a child; its JSON result. */
async function inChild(body) {
  const code = `
    const { connect, ConnectError } = require(${JSON.stringify(`${root}/lib/index.js`)});
    (async () => { ${body} })().then(
      (r) => { process.stdout.write(JSON.stringify({ ok: r ?? null })); process.exit(0); },
      (e) => { process.stdout.write(JSON.stringify({ error: e.message, name: e.name, isConnectError: e instanceof ConnectError })); process.exit(0); },
    );`;
  const { stdout, stderr } = await runNode(['-e', code], { env: sb.env });
  try {
    return JSON.parse(stdout);
  } catch {
    throw new Error(`child output: ${stdout} ${stderr}`);
  }
}

const CONNECT_AND_READ = `
  const c = await connect(NAME);
  const title = await c.page.title();
  const out = { sessionName: c.sessionName, cdpUrl: c.cdpUrl, connectionId: c.connectionId, title,
    keys: Object.keys(c).sort(), contexts: c.browser.contexts().length };
  await c.disconnect();
  return out;`;

const connectAndRead = (name) =>
  inChild(CONNECT_AND_READ.replace('NAME', name === undefined ? '' : JSON.stringify(name)));

test('connect() errors: none, unknown, dead, starting, no CDP URL, CDP failure, several', async () => {
  await sb.cli(['session', 'list']);
  const r0 = await connectAndRead();
  assert.deepEqual(r0, {
    error: 'No running Aluvia sessions found. Start one with: npx aluvia-sdk session start <url>',
    name: 'ConnectError',
    isConnectError: true,
  });
  const unknown = await connectAndRead('nope');
  assert.equal(
    unknown.error,
    "No Aluvia session found named 'nope'. Run 'npx aluvia-sdk session list' to list sessions.",
  );
  assert.equal(unknown.name, 'ConnectError');

  sb.plant('dead', { pid: await deadPid(), session: 'dead', ready: true, cdpUrl: 'http://127.0.0.1:9' });
  assert.equal((await connectAndRead('dead')).error, "Session 'dead' is no longer running. Stale lock file removed.");
  assert.equal(sb.readLock('dead'), null);

  // Planted with this test runner's pid: alive.
  sb.plant('starting', { pid: process.pid, processStart: startOf(process.pid), session: 'starting' });
  assert.equal((await connectAndRead('starting')).error, "Session 'starting' is still starting up. Try again shortly.");
  assert.equal((await connectAndRead()).error, "Session 'starting' is still starting up. Try again shortly.");

  sb.plant('nocdp', { pid: process.pid, processStart: startOf(process.pid), session: 'nocdp', ready: true });
  assert.equal((await connectAndRead('nocdp')).error, "Session 'nocdp' has no CDP URL.");

  const several = await connectAndRead();
  assert.equal(
    several.error,
    "Multiple Aluvia sessions running (nocdp, starting). Specify which one: connect('nocdp')",
  );

  const url = `http://127.0.0.1:${closedPort}`;
  sb.plant('nocdp', {
    pid: process.pid,
    processStart: startOf(process.pid),
    session: 'nocdp',
    ready: true,
    cdpUrl: url,
  });
  const failed = await connectAndRead('nocdp');
  assert.ok(failed.error.startsWith(`Failed to connect to session 'nocdp' at ${url}: `), failed.error);
  assert.equal(failed.name, 'ConnectError');

  const { rmSync } = await import('node:fs');
  rmSync(sb.lockPath('nocdp'));
  rmSync(sb.lockPath('starting'));
});

test('connect(): auto-select, by name, disconnect leaves the session running', async () => {
  const a = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'one']);
  assert.equal(a.code, 0, a.stdout);
  const r = await connectAndRead();
  assert.deepEqual(r.ok, {
    sessionName: 'one',
    cdpUrl: a.json.cdpUrl,
    connectionId: a.json.connectionId,
    title: 'Local Page',
    keys: ['browser', 'cdpUrl', 'connectionId', 'context', 'disconnect', 'page', 'sessionName'],
    contexts: 1,
  });
  // disconnect() closed only the CDP connection.
  assert.ok(alive(a.json.pid));
  const version = await fetch(`${a.json.cdpUrl}/json/version`);
  assert.equal(version.status, 200);
  const again = await connectAndRead();
  assert.equal(again.ok.title, 'Local Page');

  // A page navigated through connect() is seen by the next connect().
  const nav = await inChild(`
    const c = await connect('one');
    await c.page.goto(${JSON.stringify(`${site.url}/two`)});
    await c.disconnect();
    const d = await connect('one');
    const t = await d.page.title();
    await d.disconnect();
    return t;`);
  assert.equal(nav.ok, 'Second Page');

  const b = await sb.cli(['session', 'start', `${site.url}/two`, '--browser-session', 'two']);
  assert.equal(b.code, 0);
  assert.equal(
    (await connectAndRead()).error,
    "Multiple Aluvia sessions running (one, two). Specify which one: connect('one')",
  );
  const byName = await connectAndRead('two');
  assert.equal(byName.ok.sessionName, 'two');
  assert.equal(byName.ok.title, 'Second Page');
  assert.equal((await sb.cli(['session', 'list'])).json.count, 2);
  const closed = await sb.cli(['session', 'close', '--all']);
  assert.equal(closed.json.count, 2);
});
