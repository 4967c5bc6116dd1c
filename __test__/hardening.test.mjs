// Input from hostile places: API servers that answer without end, with
// terminal escapes or huge messages; credentials in URLs; options of the
// wrong type or range; a refused lock directory; the emulator's admin
// endpoints; the gateway password in front of an agent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sdk, serve, root, runNode, require } from './helpers.mjs';
import { Sandbox, pageHandler, startOf } from './sessions.mjs';

const { AluviaApi, AluviaClient, ApiError } = sdk;

let emu;
let closedPort;

before(async () => {
  emu = await sdk.startEmulator();
  const tmp = await serve(() => {});
  closedPort = tmp.port;
  await tmp.close();
});

after(async () => {
  await emu?.stop();
});

/** A loopback API server whose every answer is `handler(req, res)`; its base URL is `url + '/v1'`. */
async function apiServer(handler) {
  const srv = await serve(handler);
  return { ...srv, apiBaseUrl: `${srv.url}/v1` };
}

const envelope = (res, status, error) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ success: false, error }));
};

test('an endless API answer is cut at 4 MiB: ApiError, and the memory stays flat', async () => {
  const chunk = Buffer.alloc(64 * 1024, 'a');
  const srv = await apiServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    let open = true;
    res.on('close', () => (open = false));
    const pump = () => {
      while (open && res.write(chunk));
      if (open) res.once('drain', pump);
    };
    pump();
  });
  try {
    const api = new AluviaApi({ apiKey: 'k', apiBaseUrl: srv.apiBaseUrl });
    const rssBefore = process.memoryUsage().rss;
    await assert.rejects(api.account.get(), (e) => {
      assert.ok(e instanceof ApiError, e.stack);
      assert.equal(e.message, 'API response body exceeds 4 MiB (HTTP 200)');
      assert.equal(e.statusCode, 200);
      return true;
    });
    await assert.rejects(api.request({ method: 'GET', path: '/account' }), /exceeds 4 MiB/);
    // A caller's fetch is read with the same limit.
    const viaFetch = new AluviaApi({ apiKey: 'k', apiBaseUrl: srv.apiBaseUrl, fetch });
    await assert.rejects(viaFetch.account.get(), {
      name: 'ApiError',
      message: 'API response body exceeds 4 MiB (HTTP 200)',
    });
    await assert.rejects(viaFetch.request({ method: 'GET', path: '/account' }), { name: 'ApiError', statusCode: 200 });
    const grown = process.memoryUsage().rss - rssBefore;
    assert.ok(grown < 256 * 1024 * 1024, `RSS grew by ${grown} bytes`);
  } finally {
    await srv.close();
  }
});

test("a server's error message loses its escapes and control characters and is capped", async () => {
  const huge = 'x'.repeat(3_000_000);
  const srv = await apiServer((req, res) => {
    if (req.url.endsWith('/geos')) {
      envelope(res, 500, { code: 'boom\u001b[31m', message: '\u001b]0;pwned\u0007Bad\r\nthing\u001b[2J\u0000 here' });
    } else {
      envelope(res, 422, { code: 'big', message: huge });
    }
  });
  try {
    const api = new AluviaApi({ apiKey: 'k', apiBaseUrl: srv.apiBaseUrl });
    await assert.rejects(api.geos.list(), {
      name: 'ApiError',
      message: 'API request failed (HTTP 500) code=boom message=Bad  thing here',
    });
    await assert.rejects(api.account.get(), (e) => {
      assert.ok(e instanceof ApiError);
      assert.ok(e.message.startsWith('API request failed (HTTP 422) code=big message=xxx'), e.message.slice(0, 80));
      assert.ok(e.message.endsWith('x…'));
      assert.ok(e.message.length < 400, `${e.message.length} characters`);
      return true;
    });
    // The same through a caller's fetch: the engine reads the answer.
    const viaFetch = new AluviaApi({ apiKey: 'k', apiBaseUrl: srv.apiBaseUrl, fetch });
    await assert.rejects(viaFetch.geos.list(), {
      message: 'API request failed (HTTP 500) code=boom message=Bad  thing here',
    });
  } finally {
    await srv.close();
  }
});

test('userinfo in apiBaseUrl never reaches a message', async () => {
  const apiBaseUrl = `http://admin:S3CRET@127.0.0.1:${closedPort}/v1`;
  const api = new AluviaApi({ apiKey: 'k', apiBaseUrl });
  await assert.rejects(api.account.get(), (e) => {
    assert.ok(e instanceof ApiError);
    assert.ok(
      e.message.startsWith(`API request failed: cannot reach http://[redacted]@127.0.0.1:${closedPort}/v1 (`),
      e.message,
    );
    assert.ok(!e.message.includes('S3CRET'));
    return true;
  });
  const client = new AluviaClient({ apiKey: 'k', apiBaseUrl, logLevel: 'silent' });
  await assert.rejects(client.start(), (e) => {
    assert.ok(e instanceof ApiError);
    assert.ok(!e.message.includes('S3CRET') && e.message.includes('[redacted]@'), e.message);
    return true;
  });
  await client.stop();
  assert.throws(
    () => new AluviaApi({ apiKey: 'k', apiBaseUrl: 'ftp://admin:S3CRET@h/v1' }),
    (e) => {
      assert.ok(!e.message.includes('S3CRET'), e.message);
      return true;
    },
  );
});

test('a malformed gatewayHost is a TypeError at construction', () => {
  for (const gatewayHost of ['user:pass@h', 'http://h', 'bad host', '[::1', '', 'h:8080']) {
    assert.throws(
      () => new AluviaClient({ apiKey: 'k', gatewayHost }),
      (e) => {
        assert.ok(e instanceof TypeError, `${gatewayHost}: ${e.stack}`);
        assert.ok(e.message.startsWith('gatewayHost must be'), e.message);
        assert.ok(!e.message.includes('user:pass'), e.message);
        return true;
      },
    );
  }
  for (const gatewayHost of ['gateway.aluvia.io', '127.0.0.1', '::1', '[::1]']) {
    new AluviaClient({ apiKey: 'k', gatewayHost });
  }
});

// [option, value, class, message start]
const TIMEOUT_CASES = [
  ['timeoutMs', '5', TypeError, 'timeoutMs must be a number, got string'],
  ...[Number.NaN, -1, Infinity, 0, 0.5, 2 ** 31].map((v) => [
    'timeoutMs',
    v,
    RangeError,
    'timeoutMs must be an integer from 1 to 2147483647',
  ]),
];

const API_CASES = [
  ['apiKey', 42, TypeError, 'apiKey must be a string, got number'],
  ['apiBaseUrl', 42, TypeError, 'apiBaseUrl must be a string, got number'],
  ['fetch', 'fetch', TypeError, 'fetch must be a function, got string'],
  ...TIMEOUT_CASES,
];

const CLIENT_CASES = [
  ...API_CASES.filter(([name]) => name !== 'fetch'),
  ['connectionId', true, TypeError, 'connectionId must be a finite number'],
  ['connectionId', Number.NaN, RangeError, 'connectionId must be a finite number'],
  ['strict', 'yes', TypeError, 'strict must be a boolean, got string'],
  ['pollIntervalMs', '1000', TypeError, 'pollIntervalMs must be a number, got string'],
  ...[Number.NaN, -1, 1.5, Infinity].map((v) => ['pollIntervalMs', v, RangeError, 'pollIntervalMs must be an integer']),
  ['gatewayProtocol', 1, TypeError, 'gatewayProtocol must be a string, got number'],
  ['gatewayProtocol', 'ftp', RangeError, "gatewayProtocol must be 'http' or 'https'"],
  ['gatewayPort', '80', TypeError, 'gatewayPort must be a number, got string'],
  ...[-1, 65536, 80.5, Number.NaN].map((v) => [
    'gatewayPort',
    v,
    RangeError,
    'gatewayPort must be an integer from 0 to 65535',
  ]),
  ['gatewayHost', 1, TypeError, 'gatewayHost must be a string, got number'],
  ['localPort', '0', TypeError, 'localPort must be a number, got string'],
  ...[-1, 70000, 1.5].map((v) => ['localPort', v, RangeError, 'localPort must be an integer from 0 to 65535']),
  ['logLevel', 1, TypeError, 'logLevel must be a string, got number'],
  ['logLevel', 'loud', RangeError, "logLevel must be 'silent', 'info' or 'debug'"],
  ['startPlaywright', 'true', TypeError, 'startPlaywright must be a boolean, got string'],
  ['headless', 1, TypeError, 'headless must be a boolean, got number'],
  ['trustSpki', 'pin', TypeError, 'trustSpki must be an array of strings, got string'],
  ['trustSpki', [1], TypeError, 'trustSpki must be an array of strings, got an array'],
  ['blockDetection', 'on', TypeError, 'blockDetection must be an object, got string'],
  ['blockDetection', { onDetection: 1 }, TypeError, 'blockDetection.onDetection must be a function'],
  ['blockDetection', { networkIdleTimeoutMs: 1.5 }, TypeError, 'Invalid blockDetection option: '],
  ['blockDetection', { extraStatusCodes: [70000] }, TypeError, 'Invalid blockDetection option: '],
];

function assertOption(make, [name, value, cls, start]) {
  const what = `${name}=${typeof value === 'number' ? value : JSON.stringify(value)}`;
  assert.throws(make({ apiKey: 'k', [name]: value }), (e) => {
    assert.equal(e.constructor, cls, `${what}: ${e.stack}`);
    assert.ok(e.message.startsWith(start), `${what}: ${e.message}`);
    return true;
  });
}

test('AluviaApi options: a TypeError or RangeError naming the option', () => {
  for (const c of API_CASES) assertOption((o) => () => new AluviaApi(o), c);
  assert.throws(() => new AluviaApi('k'), { name: 'TypeError', message: 'options must be an object, got string' });
  assert.equal(new AluviaApi({ apiKey: 'k', timeoutMs: 1 })._native.timeoutMs, 1);
  assert.equal(new AluviaApi({ apiKey: 'k', timeoutMs: null })._native.timeoutMs, 30000);
});

test('AluviaClient options: the same checks, and the same for its api', () => {
  for (const c of CLIENT_CASES) assertOption((o) => () => new AluviaClient(o), c);
  assert.throws(() => new AluviaClient(7), { name: 'TypeError', message: 'options must be an object, got number' });
  const ok = new AluviaClient({
    apiKey: 'k',
    connectionId: 12,
    timeoutMs: 1,
    pollIntervalMs: 0,
    gatewayPort: 8080,
    localPort: 0,
    gatewayProtocol: 'https',
    logLevel: 'silent',
    strict: false,
    headless: true,
    startPlaywright: false,
    trustSpki: [],
    blockDetection: {},
  });
  assert.equal(ok.api._native.timeoutMs, 1);
});

/** Runs `body` (with `connect` in scope) in a child with `env`; its JSON outcome. */
async function connectInChild(body, env) {
  const code = `
    const { connect, ConnectError } = require(${JSON.stringify(`${root}/lib/index.js`)});
    (async () => { ${body} })().then(
      (r) => { process.stdout.write(JSON.stringify({ ok: r ?? null })); process.exit(0); },
      (e) => { process.stdout.write(JSON.stringify({ error: e.message, name: e.name, isConnectError: e instanceof ConnectError })); process.exit(0); },
    );`;
  const { stdout, stderr } = await runNode(['-e', code], { env });
  try {
    return JSON.parse(stdout);
  } catch {
    throw new Error(`child output: ${stdout} ${stderr}`);
  }
}

test('connect(): a refused lock directory is a ConnectError; a CDP failure message is one clean line', async () => {
  const sb = new Sandbox(null, 'harden-connect');
  try {
    mkdirSync(sb.lockDir, { mode: 0o700 });
    chmodSync(sb.lockDir, 0o777);
    const refused = await connectInChild('await connect();', sb.env);
    assert.equal(refused.name, 'ConnectError');
    assert.equal(refused.isConnectError, true);
    assert.match(refused.error, /^Refusing to use lock directory .*its mode is 0777/);

    chmodSync(sb.lockDir, 0o700);
    const cdpUrl = `http://127.0.0.1:${closedPort}`;
    sb.plant('gone', { pid: process.pid, processStart: startOf(process.pid), session: 'gone', ready: true, cdpUrl });
    const failed = await connectInChild("await connect('gone');", sb.env);
    assert.equal(failed.name, 'ConnectError');
    assert.ok(failed.error.startsWith(`Failed to connect to session 'gone' at ${cdpUrl}: `), failed.error);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test is that no control character is left
    assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(failed.error), JSON.stringify(failed.error));
    assert.ok(failed.error.length <= 400, failed.error);
  } finally {
    // The planted lock names this process: `session close --all` must not see it.
    rmSync(sb.lockPath('gone'), { force: true });
    chmodSync(sb.lockDir, 0o700);
    await sb.dispose();
  }
});

test("the emulator's admin endpoints take its API key; the browser approve link does not", async () => {
  const base = emu.apiBaseUrl.replace(/\/v1$/, '');
  const send = (method, path, headers = {}) => fetch(`${base}${path}`, { method, headers });
  const key = { authorization: `Bearer ${emu.apiKey}` };
  const endpoints = [
    ['GET', '/_emulator/faults'],
    ['DELETE', '/_emulator/faults'],
    ['GET', '/_emulator/traffic'],
    ['GET', '/_emulator/auth'],
    ['GET', '/_emulator/connections/1'],
  ];
  for (const [method, path] of endpoints) {
    const none = await send(method, path);
    assert.equal(none.status, 401, `${method} ${path}`);
    assert.equal((await none.json()).error.code, 'unauthorized');
    assert.equal((await send(method, path, { authorization: 'Bearer wrong' })).status, 401, `${method} ${path}`);
  }
  assert.equal((await send('POST', '/_emulator/faults', { 'content-type': 'application/json' })).status, 401);
  assert.equal((await send('POST', '/_emulator/auth/approve')).status, 401);
  assert.equal((await send('GET', '/_emulator/faults', key)).status, 200);
  assert.equal((await send('GET', '/_emulator/traffic', key)).status, 200);
  assert.equal((await send('DELETE', '/_emulator/faults', key)).status, 200);

  // A login approved by its link, as a person would, without the key.
  const init = await fetch(`${emu.apiBaseUrl}/auth/cli/init`, { method: 'POST' });
  const login = (await init.json()).data;
  const approve = await send(
    'GET',
    new URL(login.verification_uri_complete).pathname + new URL(login.verification_uri_complete).search,
  );
  assert.equal(approve.status, 200);
  const poll = await fetch(`${emu.apiBaseUrl}/auth/cli/poll`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ device_code: login.device_code }),
  });
  assert.equal((await poll.json()).data.api_key, emu.apiKey);
});

test('MCP session_get redacts the gateway password; the CLI session get shows it', async () => {
  const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
  const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
  const site = await serve(pageHandler);
  const sb = new Sandbox(emu, 'harden-mcp');
  const client = new Client({ name: 'aluvia-test', version: '1.0.0' });
  try {
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [join(root, 'bin', 'aluvia-mcp.js')],
        env: { ...process.env, ...sb.env },
        stderr: 'ignore',
      }),
    );
    const call = async (name, args) => {
      const res = await client.callTool({ name, arguments: args });
      return { isError: Boolean(res.isError), json: JSON.parse(res.content[0].text) };
    };
    const started = await call('session_start', { url: `${site.url}/`, browserSession: 'secret' });
    assert.equal(started.isError, false, JSON.stringify(started.json));
    const api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
    const real = await api.account.connections.get(started.json.connectionId);
    assert.ok(real.proxy_password.length > 0);

    const got = await call('session_get', { browserSession: 'secret' });
    assert.equal(got.isError, false);
    assert.equal(got.json.connection.proxy_password, '[redacted]');
    assert.equal(got.json.connection.proxy_username, real.proxy_username);
    assert.ok(!JSON.stringify(got.json).includes(real.proxy_password));

    const cli = await sb.cli(['session', 'get', '--browser-session', 'secret']);
    assert.equal(cli.json.connection.proxy_password, real.proxy_password);

    assert.equal((await call('session_close', { all: true })).isError, false);
  } finally {
    await client.close();
    await sb.dispose();
    await site.close();
  }
});
