import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as esm from '../index.mjs';
import { require, root, runCli, cliPath } from './helpers.mjs';

const cjs = require('../lib/index.js');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

test('ESM import and CJS require expose the same API', () => {
  const names = [
    'AluviaClient',
    'AluviaApi',
    'MissingApiKeyError',
    'InvalidApiKeyError',
    'ApiError',
    'ProxyStartError',
    'ConnectError',
    'startEmulator',
  ];
  for (const name of names) {
    assert.equal(typeof cjs[name], 'function', `require: ${name}`);
    assert.equal(esm[name], cjs[name], `import: ${name}`);
  }
  assert.equal(require(join(root, pkg.exports['.'].require)), cjs);
});

test('error classes: instanceof, name, message, statusCode', () => {
  const cases = [
    [new cjs.MissingApiKeyError(), 'MissingApiKeyError', 'Aluvia apiKey is required'],
    [new cjs.InvalidApiKeyError('x'), 'InvalidApiKeyError', 'x'],
    [new cjs.ApiError('y', 422), 'ApiError', 'y'],
    [new cjs.ProxyStartError('z'), 'ProxyStartError', 'z'],
    [new cjs.ConnectError('w'), 'ConnectError', 'w'],
  ];
  for (const [err, name, message] of cases) {
    assert.ok(err instanceof Error);
    assert.ok(err instanceof cjs[name]);
    assert.equal(err.name, name);
    assert.equal(err.message, message);
  }
  assert.equal(new cjs.ApiError('y', 422).statusCode, 422);
});

test('the package declares both bins on one entry', () => {
  assert.equal(pkg.bin.aluvia, pkg.bin['aluvia-sdk']);
  assert.equal(join(root, pkg.bin.aluvia), cliPath);
});

test('aluvia help lists what works, as text and as JSON, and -h anywhere', async () => {
  const text = await runCli(['help']);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^Usage: aluvia <command>/);
  const json = await runCli(['help', '--json']);
  assert.equal(json.code, 0);
  const commands = json.json.commands.map((c) => c.command);
  assert.ok(commands.includes('emulator'));
  for (const c of json.json.commands) {
    assert.equal(typeof c.description, 'string');
    assert.ok(Array.isArray(c.options));
  }
  const anywhere = await runCli(['nonsense', '-h', '--json']);
  assert.equal(anywhere.code, 0);
  assert.deepEqual(anywhere.json, json.json);
});

test('an unknown command is the documented error with exit 1', async () => {
  const r = await runCli(['frobnicate']);
  assert.equal(r.code, 1);
  assert.deepEqual(r.json, { error: `Unknown command: 'frobnicate'. Run "aluvia help" for usage.` });
  assert.equal(r.stdout.trim().split('\n').length, 1, 'exactly one JSON object');
});

test('aluvia emulator prints one JSON line with the exports and stops on SIGTERM', async () => {
  const child = spawn(process.execPath, [cliPath, 'emulator'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  while (!out.includes('\n')) await once(child.stdout, 'data');
  const info = JSON.parse(out.split('\n')[0]);
  assert.match(info.apiBaseUrl, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  assert.equal(info.gatewayHost, '127.0.0.1');
  assert.equal(typeof info.gatewayPort, 'number');
  assert.ok(info.exports.includes(`export ALUVIA_API_KEY=${info.apiKey}`));
  assert.ok(info.exports.includes(`export ALUVIA_API_BASE_URL=${info.apiBaseUrl}`));
  assert.ok(info.exports.includes(`export ALUVIA_GATEWAY_HOST=${info.gatewayHost}`));
  assert.ok(info.exports.includes(`export ALUVIA_GATEWAY_PORT=${info.gatewayPort}`));
  const api = new cjs.AluviaApi({ apiKey: info.apiKey, apiBaseUrl: info.apiBaseUrl });
  assert.ok((await api.geos.list()).length > 0);
  child.kill('SIGTERM');
  const [code] = await once(child, 'close');
  assert.equal(code, 0);
  await assert.rejects(api.geos.list(), cjs.ApiError, 'the emulator stopped');
});

test('aluvia emulator rejects a bad port with one JSON error', async () => {
  const r = await runCli(['emulator', '--port', 'abc']);
  assert.equal(r.code, 1);
  assert.deepEqual(r.json, { error: "Invalid --port: 'abc' must be an integer from 0 to 65535." });
});
