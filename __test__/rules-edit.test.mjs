// `session set-rules` from several CLI processes at once: every edit lands,
// because each one reads, changes and PATCHes the connection's rules under
// the connection's lock in the session lock directory. The emulator is the
// API; it delays every API call so that unserialized edits would overlap.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync } from 'node:fs';
import { sdk, admin } from './helpers.mjs';
import { Sandbox, alive, startOf } from './sessions.mjs';

const API_DELAY_MS = 500;

let emu;
let sb;
let api;
let holder;
let connectionId;

before(async () => {
  emu = await sdk.startEmulator({ site: false });
  sb = new Sandbox(emu, 'rules');
  api = new sdk.AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
  connectionId = (await api.account.connections.create({})).connection_id;
  // A session as the daemon leaves it: a live process and its connection.
  holder = spawn('sleep', ['300'], { stdio: 'ignore' });
  mkdirSync(sb.lockDir, { recursive: true, mode: 0o700 });
  sb.plant('editor', {
    pid: holder.pid,
    processStart: startOf(holder.pid),
    session: 'editor',
    connectionId,
    ready: true,
  });
});

afterEach(async () => {
  await admin(emu, 'DELETE', '/_emulator/faults');
});

after(async () => {
  await sb?.dispose();
  if (holder && holder.exitCode === null && holder.signalCode === null) {
    holder.kill('SIGKILL');
    await once(holder, 'exit');
  }
  await emu?.stop();
});

const rulesNow = async () => (await api.account.connections.get(connectionId)).rules;

/** Files the rule edits leave in the lock directory (none: the lock file goes with the lock). */
const ruleLocks = () => readdirSync(sb.lockDir).filter((f) => f.startsWith('rules-'));

test('two concurrent set-rules appends both land', async () => {
  await api.account.connections.patch(connectionId, { rules: ['keep.com'] });
  await admin(emu, 'POST', '/_emulator/faults', { apiDelayMs: API_DELAY_MS });
  const [one, two] = await Promise.all([
    sb.cli(['session', 'set-rules', 'one.example.com']),
    sb.cli(['session', 'set-rules', 'two.example.com', '--browser-session', 'editor']),
  ]);
  for (const r of [one, two]) {
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(Object.keys(r.json), ['browserSession', 'connectionId', 'rules', 'count']);
    assert.equal(r.json.browserSession, 'editor');
    assert.equal(r.json.connectionId, connectionId);
    assert.equal(r.json.count, r.json.rules.length);
  }
  const final = await rulesNow();
  assert.deepEqual([...final].sort(), ['keep.com', 'one.example.com', 'two.example.com']);
  assert.equal(final[0], 'keep.com', 'appended after the existing rules');
  // One of the two ran second and saw the other's rule.
  assert.ok(
    [one, two].some((r) => r.json.count === 3),
    JSON.stringify([one.json, two.json]),
  );
  assert.deepEqual(ruleLocks(), []);
  assert.ok(alive(holder.pid), 'the session is left alone');
});

test('a concurrent remove and append both land', async () => {
  await api.account.connections.patch(connectionId, { rules: ['keep.com', 'old.com'] });
  await admin(emu, 'POST', '/_emulator/faults', { apiDelayMs: API_DELAY_MS });
  const [removed, added] = await Promise.all([
    sb.cli(['session', 'set-rules', '--remove', 'old.com']),
    sb.cli(['session', 'set-rules', 'new.com']),
  ]);
  assert.equal(removed.code, 0, removed.stdout + removed.stderr);
  assert.equal(added.code, 0, added.stdout + added.stderr);
  assert.deepEqual(await rulesNow(), ['keep.com', 'new.com']);
  assert.deepEqual(ruleLocks(), []);
});

test('set-rules output and errors are as before', async () => {
  await api.account.connections.patch(connectionId, { rules: ['keep.com'] });
  const added = await sb.cli(['session', 'set-rules', 'a.com, b.com,keep.com,a.com']);
  assert.equal(added.code, 0);
  assert.deepEqual(added.json, {
    browserSession: 'editor',
    connectionId,
    rules: ['keep.com', 'a.com', 'b.com'],
    count: 3,
  });
  // Nothing to change: the same answer, and the connection is not rewritten.
  const before = await api.request({ method: 'GET', path: `/account/connections/${connectionId}` });
  const again = await sb.cli(['session', 'set-rules', 'b.com']);
  assert.deepEqual(again.json, added.json);
  const unchanged = await sb.cli(['session', 'set-rules', '--remove', 'never.com']);
  assert.deepEqual(unchanged.json, added.json);
  const after = await api.request({ method: 'GET', path: `/account/connections/${connectionId}` });
  assert.equal(after.etag, before.etag);

  const removed = await sb.cli(['session', 'set-rules', '--remove', 'a.com,keep.com']);
  assert.deepEqual(removed.json, { browserSession: 'editor', connectionId, rules: ['b.com'], count: 1 });
  assert.deepEqual(await rulesNow(), ['b.com']);

  // An API failure prints the API's message.
  const missing = 987654;
  const apiError = await api.account.connections.get(missing).then(
    () => assert.fail('the connection should not exist'),
    (e) => e,
  );
  sb.plant('elsewhere', {
    pid: holder.pid,
    processStart: startOf(holder.pid),
    session: 'elsewhere',
    connectionId: missing,
    ready: true,
  });
  const failed = await sb.cli(['session', 'set-rules', 'x.com', '--browser-session', 'elsewhere']);
  assert.equal(failed.code, 1);
  assert.deepEqual(failed.json, { error: apiError.message });
  const bad = await sb.cli(['session', 'set-rules', 'x.com', '--browser-session', 'editor'], {
    env: { ALUVIA_API_KEY: 'wrong-key' },
  });
  assert.equal(bad.code, 1);
  assert.match(bad.json.error, /^Authentication failed \(HTTP 401\)/);
  assert.deepEqual(ruleLocks(), []);
});
