import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { sdk, root, serve, require } from './helpers.mjs';
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
];

let emu;
let site;
let box;

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<title>Local ${req.url}</title><p>${'A calm page about nothing in particular. '.repeat(20)}</p>`);
  });
  box = new Sandbox(emu, 'mcp');
});

after(async () => {
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

async function call(client, name, args = {}) {
  const res = await client.callTool({ name, arguments: args });
  assert.equal(res.content.length, 1);
  assert.equal(res.content[0].type, 'text');
  return { isError: Boolean(res.isError), json: JSON.parse(res.content[0].text) };
}

test('the server lists exactly the ten tools with their parameter schemas', async () => {
  const { client, stderr } = await connectClient();
  try {
    assert.equal(client.getServerVersion().name, 'aluvia');
    assert.equal(client.getServerVersion().version, pkg.version);
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    const schema = (n) => tools.find((t) => t.name === n).inputSchema;
    assert.deepEqual(schema('session_start').required, ['url']);
    assert.equal(schema('session_start').properties.connectionId.type, 'integer');
    for (const p of ['url', 'browserSession']) assert.equal(schema('session_start').properties[p].type, 'string');
    for (const p of ['headful', 'autoUnblock', 'disableBlockDetection']) {
      assert.equal(schema('session_start').properties[p].type, 'boolean');
    }
    assert.deepEqual(Object.keys(schema('session_close').properties).sort(), ['all', 'browserSession']);
    assert.deepEqual(Object.keys(schema('session_set_geo').properties).sort(), ['browserSession', 'clear', 'geo']);
    assert.deepEqual(Object.keys(schema('session_set_rules').properties).sort(), ['browserSession', 'remove', 'rules']);
    assert.deepEqual(Object.keys(schema('account_usage').properties).sort(), ['end', 'start']);
    for (const n of ['session_list', 'account_get', 'geos_list']) assert.deepEqual(schema(n).properties, {});
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
  const known = 'url, autoUnblock, disableBlockDetection, headful, browserSession, connectionId';
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
