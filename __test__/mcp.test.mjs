import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { sdk, root, serve, require, eventually, admin } from './helpers.mjs';
import { Sandbox, processes, alive } from './sessions.mjs';

const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

const TOOL_NAMES = [
  'session_start',
  'session_close',
  'session_list',
  'session_get',
  'session_rotate_ip',
  'session_set_geo',
  'session_set_rules',
  'account_get',
  'account_usage',
  'geos_list',
  'profile_list',
];

let emu;
let site;
let box;
/** Servers spawned by rawServer() that still run. */
const children = new Set();

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<title>Local ${req.url}</title><p>${'A calm page about nothing in particular. '.repeat(20)}</p>`);
  });
  box = new Sandbox(emu, 'mcp');
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await box?.dispose();
  await site?.close();
  await emu?.stop();
});

async function connectClient(env = {}) {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [join(root, 'bin', 'aluvia-mcp.js')],
    env: { ...process.env, ...box.env, ...env },
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (c) => (stderr += c));
  const client = new Client({ name: 'aluvia-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, stderr: () => stderr };
}

/**
 * The server as a child process spoken to in raw lines, for what an SDK
 * client never sends: `write` (as is), `send` (one JSON line), `next` (the
 * next message it writes), `end` (stdin closed; resolves its exit code).
 */
function rawServer() {
  const child = spawn(process.execPath, [join(root, 'bin', 'aluvia-mcp.js')], {
    env: { ...process.env, ...box.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const messages = [];
  createInterface({ input: child.stdout }).on('line', (line) => messages.push(JSON.parse(line)));
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal);
    }),
  );
  const write = (data) => new Promise((resolve, reject) => child.stdin.write(data, (e) => (e ? reject(e) : resolve())));
  return {
    child,
    stderr: () => stderr,
    write,
    send: (message) => write(`${JSON.stringify(message)}\n`),
    async next() {
      await eventually(() => messages.length > 0 || child.exitCode !== null, { what: 'an answer from the server' });
      if (!messages.length) throw new Error(`the server exited (${child.exitCode}) without answering: ${stderr}`);
      return messages.shift();
    },
    async end() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    kill: () => child.kill('SIGKILL'),
  };
}

/** A raw server past the MCP handshake. */
async function initialized() {
  const server = rawServer();
  await server.send({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
  });
  assert.equal((await server.next()).result.serverInfo.name, 'aluvia');
  await server.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
  return server;
}

const MIB = 1024 * 1024;
const REFUSED_LINE = /^aluvia-mcp: message of (\d+) bytes refused: over the 10 MiB limit$/m;
/** The sizes the server's stderr lines name for the messages it refused as too large. */
const refusedSizes = (stderr) => [...stderr.matchAll(new RegExp(REFUSED_LINE.source, 'gm'))].map((m) => Number(m[1]));
const tooLarge = (id, size) => ({
  jsonrpc: '2.0',
  id,
  error: { code: -32600, message: `Message of ${size} bytes refused: over the 10 MiB limit.` },
});

async function call(client, name, args = {}) {
  const res = await client.callTool({ name, arguments: args });
  assert.equal(res.content.length, 1);
  assert.equal(res.content[0].type, 'text');
  return { isError: Boolean(res.isError), json: JSON.parse(res.content[0].text) };
}

test('the server lists exactly the eleven tools with their parameter schemas', async () => {
  const { client, stderr } = await connectClient();
  try {
    assert.equal(client.getServerVersion().name, 'aluvia');
    assert.equal(client.getServerVersion().version, pkg.version);
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    const schema = (n) => tools.find((t) => t.name === n).inputSchema;
    assert.deepEqual(schema('session_start').required, ['url']);
    assert.equal(schema('session_start').properties.connectionId.type, 'integer');
    for (const p of ['url', 'browserSession', 'idleTimeout', 'profile']) {
      assert.equal(schema('session_start').properties[p].type, 'string');
    }
    for (const p of ['headful', 'autoUnblock', 'disableBlockDetection']) {
      assert.equal(schema('session_start').properties[p].type, 'boolean');
    }
    assert.deepEqual(Object.keys(schema('session_close').properties).sort(), ['all', 'browserSession']);
    assert.deepEqual(Object.keys(schema('session_set_geo').properties).sort(), ['browserSession', 'clear', 'geo']);
    assert.deepEqual(Object.keys(schema('session_set_rules').properties).sort(), ['browserSession', 'remove', 'rules']);
    assert.deepEqual(Object.keys(schema('account_usage').properties).sort(), ['end', 'start']);
    for (const n of ['session_list', 'account_get', 'geos_list', 'profile_list']) {
      assert.deepEqual(schema(n).properties, {});
    }
    assert.match(stderr(), /Aluvia MCP server running on stdio/);
  } finally {
    await client.close();
  }
});

test('account, usage and geos on the happy path; the documented errors', async () => {
  const { client } = await connectClient();
  try {
    const account = await call(client, 'account_get');
    assert.equal(account.isError, false);
    assert.equal(typeof account.json.account.account_id, 'number');
    const usage = await call(client, 'account_usage', { start: '2026-01-01' });
    assert.equal(usage.isError, false);
    assert.equal(usage.json.usage.start, '2026-01-01');
    const geos = await call(client, 'geos_list');
    assert.ok(geos.json.geos.some((g) => g.code === 'us_ca'));
    assert.equal(geos.json.count, geos.json.geos.length);

    assert.deepEqual(await call(client, 'session_start', {}), { isError: true, json: { error: 'URL is required.' } });
    const none = await call(client, 'session_get');
    assert.equal(none.isError, true);
    assert.equal(none.json.error, 'No running browser sessions found.');
  } finally {
    await client.close();
  }
  // HOME without .aluvia: no saved key either.
  const { client: keyless } = await connectClient({ ALUVIA_API_KEY: '', HOME: box.tmp });
  try {
    const r = await call(keyless, 'geos_list');
    assert.deepEqual(r, {
      isError: true,
      json: { error: 'No API key found. Run `aluvia auth` to log in, or set ALUVIA_API_KEY.' },
    });
  } finally {
    await keyless.close();
  }
});

test("arguments are checked against each tool's schema; errors name parameters, never CLI flags", async () => {
  const { client } = await connectClient();
  const known =
    'url, autoUnblock, disableBlockDetection, unblockSteps, unblockGeos, headful, browser, browserSession, connectionId, idleTimeout, profile';
  try {
    const cases = [
      ['session_start', { url: 123 }, "Invalid parameter 'url': expected a string, got 123."],
      [
        'session_start',
        { url: site.url, headful: 'yes' },
        'Invalid parameter \'headful\': expected a boolean, got "yes".',
      ],
      [
        'session_start',
        { url: site.url, connectionId: 0 },
        "Invalid parameter 'connectionId': expected an integer of at least 1, got 0.",
      ],
      [
        'session_start',
        { url: site.url, connectionId: '7' },
        'Invalid parameter \'connectionId\': expected an integer of at least 1, got "7".',
      ],
      ['session_start', { url: site.url, bogus: true }, `Unknown parameter: 'bogus'. Known parameters: ${known}.`],
      ['session_start', { url: site.url, run: 'x.mjs' }, `Unknown parameter: 'run'. Known parameters: ${known}.`],
      ['session_start', { url: '' }, 'URL is required.'],
      [
        'session_start',
        { url: 'file:///etc/passwd' },
        "Invalid URL: 'file:///etc/passwd'. Use an http:// or https:// URL.",
      ],
      [
        'session_start',
        { url: 'localhost:8080/x' },
        "Invalid URL: 'localhost:8080/x'. Use an http:// or https:// URL.",
      ],
      [
        'session_close',
        { all: true, browserSession: 'x' },
        "Parameters 'all' and 'browserSession' cannot be used together; use one of them.",
      ],
      [
        'session_set_rules',
        { rules: 'a.com', remove: 'b.com' },
        "Parameters 'rules' and 'remove' cannot be used together; use one of them.",
      ],
      [
        'session_set_geo',
        { geo: 'us', clear: true },
        "Parameters 'geo' and 'clear' cannot be used together; use one of them.",
      ],
      ['session_set_rules', {}, 'Rules are required.'],
      ['session_set_geo', {}, 'Geo code is required.'],
      ['session_set_geo', { geo: '  ' }, "Geo code cannot be empty. Provide a valid geo code or use 'clear'."],
      ['geos_list', { verbose: true }, "Unknown parameter: 'verbose'. This tool takes no parameters."],
      ['account_usage', { start: 20260101 }, "Invalid parameter 'start': expected a string, got 20260101."],
    ];
    for (const [tool, args, error] of cases) {
      const r = await call(client, tool, args);
      assert.deepEqual(r, { isError: true, json: { error } }, `${tool} ${JSON.stringify(args)}`);
      assert.ok(!error.includes('--'), error);
    }
    assert.deepEqual(box.locks(), [], 'nothing was started');
  } finally {
    await client.close();
  }
});

test('session_set_rules refuses rules with control characters as invalid rules', async () => {
  const { client } = await connectClient();
  try {
    for (const [args, shown] of [
      [{ rules: 'a.com,b\x07.com' }, 'b\\u{7}.com'],
      [{ rules: '\x1b[31mred.com', browserSession: 'ghost' }, '\\u{1b}[31mred.com'],
      [{ rules: 'nel\u0085.com' }, 'nel\\u{85}.com'],
      [{ remove: 'del\x7f.com' }, 'del\\u{7f}.com'],
    ]) {
      const r = await call(client, 'session_set_rules', args);
      assert.deepEqual(r, {
        isError: true,
        json: { error: `Invalid rule '${shown}': rules cannot contain control characters.` },
      });
    }
    assert.deepEqual(box.locks(), [], 'nothing was started');
  } finally {
    await client.close();
  }
});

test('two parallel session_start calls, the session tools, ambiguity, close all: no Chromium remains', async () => {
  const { client } = await connectClient();
  try {
    const [a, b] = await Promise.all([
      call(client, 'session_start', { url: `${site.url}/a`, browserSession: 'mcp-a' }),
      call(client, 'session_start', { url: `${site.url}/b`, browserSession: 'mcp-b', autoUnblock: true }),
    ]);
    assert.equal(a.isError, false, JSON.stringify(a.json));
    assert.equal(b.isError, false, JSON.stringify(b.json));
    assert.equal(a.json.browserSession, 'mcp-a');
    assert.equal(b.json.autoUnblock, true);
    const list = await call(client, 'session_list');
    assert.deepEqual(list.json.sessions.map((s) => s.browserSession).sort(), ['mcp-a', 'mcp-b']);

    const ambiguous = await call(client, 'session_get');
    assert.equal(ambiguous.isError, true);
    assert.equal(ambiguous.json.error, "Multiple sessions running. Specify 'browserSession'.");
    assert.deepEqual([...ambiguous.json.browserSessions].sort(), ['mcp-a', 'mcp-b']);

    const got = await call(client, 'session_get', { browserSession: 'mcp-a' });
    assert.equal(got.isError, false);
    assert.equal(got.json.browserSession, 'mcp-a');
    assert.ok('lastDetection' in got.json);

    const rotated = await call(client, 'session_rotate_ip', { browserSession: 'mcp-a' });
    assert.match(rotated.json.sessionId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const geo = await call(client, 'session_set_geo', { browserSession: 'mcp-a', geo: 'us_ny' });
    assert.equal(geo.json.targetGeo, 'us_ny');
    const both = await call(client, 'session_set_geo', { browserSession: 'mcp-a', geo: 'us_ny', clear: true });
    assert.equal(both.isError, true);
    const cleared = await call(client, 'session_set_geo', { browserSession: 'mcp-a', clear: true });
    assert.equal(cleared.json.targetGeo, null);
    const rules = await call(client, 'session_set_rules', { browserSession: 'mcp-b', rules: 'a.com,b.com' });
    assert.deepEqual(rules.json.rules.slice(-2), ['a.com', 'b.com']);
    const removed = await call(client, 'session_set_rules', { browserSession: 'mcp-b', remove: 'a.com' });
    assert.ok(!removed.json.rules.includes('a.com'));

    const pids = list.json.sessions.map((s) => s.pid);
    const closed = await call(client, 'session_close', { all: true });
    assert.equal(closed.isError, false);
    assert.equal(closed.json.message, 'All browser sessions closed.');
    assert.deepEqual([...closed.json.closed].sort(), ['mcp-a', 'mcp-b']);
    assert.equal(closed.json.count, 2);
    // Dead: gone, or a zombie the server (the daemons' parent) has yet to reap.
    for (const pid of pids) assert.equal(alive(pid), false, `daemon ${pid} still runs`);
    assert.equal(
      processes().filter((p) => p.args.includes(box.tmp)).length,
      0,
      'no Chromium of these sessions remains',
    );
    assert.deepEqual((await call(client, 'session_list')).json, { sessions: [], count: 0 });
  } finally {
    await client.close();
  }
});

test('an unknown parameter is reported as unknown whatever its name: constructor, __proto__, toString', async () => {
  const { client } = await connectClient();
  const none = (p) => `Unknown parameter: '${p}'. This tool takes no parameters.`;
  const usage = (p) => `Unknown parameter: '${p}'. Known parameters: start, end.`;
  try {
    const cases = [
      ['geos_list', { constructor: 1 }, none('constructor')],
      ['geos_list', { toString: 'x' }, none('toString')],
      ['geos_list', { hasOwnProperty: true }, none('hasOwnProperty')],
      // JSON.parse makes `__proto__` an own property, as the wire carries it.
      ['geos_list', JSON.parse('{"__proto__": {}}'), none('__proto__')],
      ['account_usage', JSON.parse('{"__proto__": {"start": "2026-01-01"}}'), usage('__proto__')],
      ['account_usage', { start: '2026-01-01', valueOf: 1 }, usage('valueOf')],
      [
        'session_close',
        JSON.parse('{"__proto__": {"all": true}}'),
        "Unknown parameter: '__proto__'. Known parameters: browserSession, all.",
      ],
      [
        'session_start',
        { url: site.url, constructor: 'x' },
        /^Unknown parameter: 'constructor'\. Known parameters: url, /,
      ],
    ];
    for (const [tool, args, error] of cases) {
      const r = await call(client, tool, args);
      assert.equal(r.isError, true, `${tool} ${JSON.stringify(args)}`);
      if (error instanceof RegExp) assert.match(r.json.error, error);
      else assert.deepEqual(r.json, { error }, `${tool} ${JSON.stringify(args)}`);
    }
    assert.deepEqual(box.locks(), [], 'nothing was started');
  } finally {
    await client.close();
  }
});

test('a message over 10 MiB gets an Invalid Request error with its id and one stderr line; the server serves on', async () => {
  const server = await initialized();
  try {
    const toolCall = (id, pad) =>
      `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"geos_list","arguments":{"pad":"${pad}"}}}`;
    const bare = Buffer.byteLength(toolCall(2, ''));
    // Exactly at the limit: taken, and the tool names the unknown parameter.
    await server.write(`${toolCall(2, 'a'.repeat(10 * MIB - bare))}\n`);
    const taken = await server.next();
    assert.equal(taken.id, 2);
    assert.equal(
      taken.result.content[0].text,
      JSON.stringify({ error: "Unknown parameter: 'pad'. This tool takes no parameters." }),
    );
    // One byte more: refused, with the id read from the line.
    await server.write(`${toolCall(3, 'a'.repeat(10 * MIB - bare + 1))}\n`);
    assert.deepEqual(await server.next(), tooLarge(3, 10 * MIB + 1));
    // The id written last, as the SDK's client does.
    const last = `{"method":"tools/call","params":{"name":"geos_list","arguments":{"pad":"${'b'.repeat(11 * MIB)}"}},"jsonrpc":"2.0","id":"last"}`;
    await server.write(`${last}\r\n`);
    assert.deepEqual(await server.next(), tooLarge('last', Buffer.byteLength(last)));
    // Nothing that shows an id: null.
    await server.write(`${'x'.repeat(12 * MIB)}\n`);
    assert.deepEqual(await server.next(), tooLarge(null, 12 * MIB));
    await server.send({ jsonrpc: '2.0', id: 4, method: 'tools/list' });
    const list = await server.next();
    assert.equal(list.id, 4);
    assert.equal(list.result.tools.length, TOOL_NAMES.length);
    assert.equal(await server.end(), 0, 'the server exits when its stdin ends, as before');
    assert.deepEqual(refusedSizes(server.stderr()), [10 * MIB + 1, Buffer.byteLength(last), 12 * MIB]);
  } finally {
    server.kill();
  }
});

test('an SDK client whose call is over the limit gets the error at once and goes on', async () => {
  const { client, stderr } = await connectClient();
  try {
    await assert.rejects(
      client.callTool({ name: 'geos_list', arguments: { pad: 'a'.repeat(11 * MIB) } }, undefined, { timeout: 30_000 }),
      (err) => {
        assert.equal(err.code, -32600);
        assert.match(err.message, /Message of \d+ bytes refused: over the 10 MiB limit\./);
        return true;
      },
    );
    const { tools } = await client.listTools();
    assert.equal(tools.length, TOOL_NAMES.length);
    assert.match(stderr(), REFUSED_LINE);
  } finally {
    await client.close();
  }
});

test('a line that never ends is not held in memory', {
  skip: process.platform !== 'linux' && 'reads /proc',
}, async () => {
  const server = await initialized();
  const peak = () =>
    Number(readFileSync(`/proc/${server.child.pid}/status`, 'utf8').match(/^VmHWM:\s+(\d+) kB/m)[1]) * 1024;
  try {
    const before = peak();
    const chunk = Buffer.alloc(MIB, 'x');
    for (let i = 0; i < 256; i++) await server.write(chunk);
    const grown = peak() - before;
    // Held whole, 256 MiB would be; read through, the pieces of the first 10 MiB and garbage not yet collected.
    assert.ok(grown < 96 * MIB, `the server's peak memory grew by ${Math.round(grown / MIB)} MiB`);
    await server.write('\n');
    assert.deepEqual(await server.next(), tooLarge(null, 256 * MIB));
    await server.send({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    assert.equal((await server.next()).id, 2);
  } finally {
    server.kill();
  }
});

test('a line that is not JSON gets a Parse error, one that is not JSON-RPC an Invalid Request error; the server serves on', async () => {
  const server = await initialized();
  const parseError = (id) => ({ jsonrpc: '2.0', id, error: { code: -32700, message: 'Parse error: not JSON.' } });
  const invalid = (id) => ({
    jsonrpc: '2.0',
    id,
    error: { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 message.' },
  });
  try {
    const cases = [
      ['not json at all', parseError(null)],
      ['{"jsonrpc":"2.0","id":5,"method":"tools/list",', parseError(5)],
      ['{"params":{"id":9},"jsonrpc":"2.0","id":"six","method":', parseError('six')],
      ['{"params":{"id":9},"method":"tools/list"', parseError(null)],
      ['{"id":7,"method":"tools/list"}', invalid(7)],
      ['{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"}', invalid(null)],
      ['[{"jsonrpc":"2.0","id":8,"method":"tools/list"}]', invalid(null)],
      ['"a string"', invalid(null)],
    ];
    for (const [line, answer] of cases) {
      await server.write(`${line}\n`);
      assert.deepEqual(await server.next(), answer, line);
    }
    // Blank lines are no messages: the next answer is the next request's.
    await server.write('\n  \r\n');
    await server.send({ jsonrpc: '2.0', id: 10, method: 'tools/list' });
    assert.equal((await server.next()).id, 10);
    assert.equal(await server.end(), 0);
    const lines = server.stderr().trim().split('\n').slice(1);
    assert.deepEqual(lines, [
      ...Array(4).fill('aluvia-mcp: message refused: not JSON'),
      ...Array(4).fill('aluvia-mcp: message refused: not a JSON-RPC 2.0 message'),
    ]);
  } finally {
    server.kill();
  }
});

test('session_get when the API fails: no connection, connectionError is the API error; the password stays redacted', async () => {
  const { client } = await connectClient();
  try {
    const started = await call(client, 'session_start', { url: `${site.url}/`, browserSession: 'mcp-offline' });
    assert.equal(started.isError, false, JSON.stringify(started.json));
    const fine = await call(client, 'session_get');
    assert.equal(fine.isError, false);
    assert.equal(fine.json.connection.connection_id, started.json.connectionId);
    assert.equal(fine.json.connection.proxy_password, '[redacted]');
    assert.ok(!('connectionError' in fine.json));

    await admin(emu, 'POST', '/_emulator/faults', { apiStatus: 503 });
    let failing;
    try {
      failing = await call(client, 'session_get');
    } finally {
      await admin(emu, 'DELETE', '/_emulator/faults');
    }
    assert.equal(failing.isError, false, JSON.stringify(failing.json));
    assert.ok(!('connection' in failing.json));
    assert.match(failing.json.connectionError, /^API request failed \(HTTP 503\) .*Emulated failure\.$/);
    assert.equal(failing.json.browserSession, 'mcp-offline');
  } finally {
    await call(client, 'session_close', { all: true });
    await client.close();
  }
});

test("session_start takes idleTimeout and profile with the CLI's errors; profile_list lists the profiles", async () => {
  const home = join(box.tmp, 'mcp-home');
  mkdirSync(home, { mode: 0o700 });
  const { client } = await connectClient({ HOME: home });
  try {
    const bad = await call(client, 'session_start', { url: site.url, idleTimeout: 'soon' });
    assert.equal(bad.isError, true);
    assert.equal(bad.json.error, "Invalid 'idleTimeout': 'soon'. Use a duration such as 30m, 2h or 0.");
    const badProfile = await call(client, 'session_start', { url: site.url, profile: 'a/b' });
    assert.equal(badProfile.json.error, 'Invalid profile name. Use only letters, numbers, hyphens, and underscores.');
    assert.deepEqual((await call(client, 'profile_list')).json, { profiles: [], count: 0 });

    const started = await call(client, 'session_start', {
      url: site.url,
      browserSession: 'mcp-profile',
      profile: 'agent',
      idleTimeout: '90s',
    });
    assert.equal(started.isError, false, JSON.stringify(started.json));
    const got = await call(client, 'session_get', { browserSession: 'mcp-profile' });
    assert.equal(got.json.profile, 'agent');
    assert.equal(got.json.idleTimeoutMs, 90_000);
    const listed = await call(client, 'profile_list');
    assert.equal(listed.json.count, 1);
    assert.equal(listed.json.profiles[0].name, 'agent');
    assert.equal(listed.json.profiles[0].inUseBy, 'mcp-profile');
    const again = await call(client, 'session_start', { url: site.url, profile: 'agent' });
    assert.deepEqual(again.json, {
      error: "Profile 'agent' is in use by session 'mcp-profile'.",
      browserSession: 'mcp-profile',
    });
    assert.equal((await call(client, 'session_close', { browserSession: 'mcp-profile' })).isError, false);
    assert.equal((await call(client, 'profile_list')).json.profiles[0].inUseBy, null);
  } finally {
    await client.close();
  }
});
