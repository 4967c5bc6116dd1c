import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import {
  sdk,
  require,
  whoami,
  recorder,
  admin,
  viaProxy,
  viaTunnel,
  root,
  emulatorClientOptions,
  runNode,
} from './helpers.mjs';

const { AluviaClient, AluviaApi, ApiError, InvalidApiKeyError, ProxyStartError } = sdk;
const { emulatorExitAddress } = require('../lib/emulator.js');

let emu;
let target;
let api;

before(async () => {
  emu = await sdk.startEmulator({ site: false });
  target = await whoami();
  api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
});

after(async () => {
  await target?.close();
  await emu?.stop();
});

function clientOptions(extra = {}) {
  return emulatorClientOptions(emu, extra);
}

async function withClient(extra, fn) {
  const client = new AluviaClient(clientOptions(extra));
  const connection = await client.start();
  try {
    return await fn(client, connection);
  } finally {
    await connection.close();
  }
}

async function exitAddressOf(connectionId) {
  const c = await api.account.connections.get(connectionId);
  return emulatorExitAddress(c.session_id, c.target_geo);
}

async function seenVia(connection) {
  const r = await viaProxy(connection.url, `${target.url}/who`);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body).remoteAddress;
}

async function seenViaTunnel(connection) {
  const r = await viaTunnel(connection.url, `127.0.0.1:${target.port}`, '/who');
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body).remoteAddress;
}

test('routing is decided per hostname, for HTTP and CONNECT, and changes on the next request', async () => {
  await withClient({}, async (client, connection) => {
    assert.equal(connection.host, '127.0.0.1');
    assert.equal(connection.url, `http://127.0.0.1:${connection.port}`);
    assert.equal(typeof client.connectionId, 'number');
    const exit = await exitAddressOf(client.connectionId);
    assert.notEqual(exit, '127.0.0.1');

    assert.equal(await seenVia(connection), '127.0.0.1', 'rules [] → direct');
    assert.equal(await seenViaTunnel(connection), '127.0.0.1');

    await client.updateRules(['127.0.0.1']);
    assert.equal(await seenVia(connection), exit, 'its host → gateway');
    assert.equal(await seenViaTunnel(connection), exit);

    await client.updateRules(['*', '-127.0.0.1']);
    assert.equal(await seenVia(connection), '127.0.0.1', 'excluded → direct');
    assert.equal(await seenViaTunnel(connection), '127.0.0.1');

    await client.updateRules(['*']);
    assert.equal(await seenVia(connection), exit);
  });
});

test('updateRules refuses rules with control characters: nothing is sent, routing stays', async () => {
  await withClient({}, async (client, connection) => {
    await client.updateRules(['127.0.0.1']);
    const exit = await exitAddressOf(client.connectionId);
    assert.equal(await seenVia(connection), exit);
    const { etag } = await api.request({ method: 'GET', path: `/account/connections/${client.connectionId}` });
    for (const [rules, shown] of [
      [['g\x02.com'], 'g\\u{2}.com'],
      [['*', '-127.0.0.1\u0085'], '-127.0.0.1\\u{85}'],
      [['127.0.0.1\n'], '127.0.0.1\\n'],
    ]) {
      await assert.rejects(client.updateRules(rules), (err) => {
        assert.equal(err.constructor, Error);
        assert.equal(err.message, `Invalid rule '${shown}': rules cannot contain control characters.`);
        return true;
      });
    }
    assert.equal(await api.account.connections.get(client.connectionId, { etag }), null, 'not PATCHed');
    assert.equal(await seenVia(connection), exit, 'the rules in use are unchanged');
  });
});

test('session id and geo updates change the exit address; an empty geo clears it', async () => {
  await withClient({}, async (client, connection) => {
    await client.updateRules(['*']);
    const before = await seenVia(connection);
    await client.updateSessionId('11111111-2222-4333-8444-555555555555');
    const afterSession = await seenVia(connection);
    assert.equal(afterSession, emulatorExitAddress('11111111-2222-4333-8444-555555555555', null));
    assert.notEqual(afterSession, before);
    await client.updateTargetGeo('us_ca');
    assert.equal(await seenViaTunnel(connection), emulatorExitAddress('11111111-2222-4333-8444-555555555555', 'us_ca'));
    await client.updateTargetGeo('   ');
    const c = await api.account.connections.get(client.connectionId);
    assert.equal(c.target_geo, null);
    assert.equal(await seenVia(connection), afterSession);
  });
});

test('the same keep-alive client connection sees a rule change on its very next request', async () => {
  await withClient({}, async (client, connection) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: connection.port, path: `${target.url}/ka`, agent }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ addr: JSON.parse(body).remoteAddress, socket: res.socket }));
          })
          .on('error', reject);
      });
    const first = await get();
    await client.updateRules(['127.0.0.1']);
    const second = await get();
    assert.equal(first.addr, '127.0.0.1');
    assert.equal(second.addr, await exitAddressOf(client.connectionId));
    agent.destroy();
  });
});

test('polling brings server-side changes, 304 keeps the config, an API outage keeps the last config', async () => {
  const rec = await recorder(emu.apiBaseUrl);
  try {
    await withClient({ apiBaseUrl: rec.baseUrl, pollIntervalMs: 1000 }, async (client, connection) => {
      const id = client.connectionId;
      assert.equal(await seenVia(connection), '127.0.0.1');
      await api.account.connections.patch(id, { rules: ['127.0.0.1'] });
      const exit = await exitAddressOf(id);
      let seen;
      for (let i = 0; i < 40 && seen !== exit; i++) {
        await new Promise((r) => setTimeout(r, 150));
        seen = await seenVia(connection);
      }
      assert.equal(seen, exit, 'the server-side PATCH arrived through polling');

      const polls = () => rec.seen.filter((s) => s.method === 'GET' && s.url === `/v1/account/connections/${id}`);
      const n = polls().length;
      while (polls().length < n + 1) await new Promise((r) => setTimeout(r, 100));
      const conditional = polls().at(-1);
      assert.match(conditional.headers['if-none-match'] ?? '', /^".+"$/, 'polls are conditional');
      assert.equal(await seenVia(connection), exit, '304 keeps the config');

      await admin(emu, 'POST', '/_emulator/faults', { apiStatus: 500 });
      try {
        const m = polls().length;
        while (polls().length < m + 2) await new Promise((r) => setTimeout(r, 100));
        assert.equal(await seenVia(connection), exit, 'an outage keeps the last config');
      } finally {
        await admin(emu, 'DELETE', '/_emulator/faults');
      }
    });
  } finally {
    await rec.close();
  }
});

test('start() is idempotent and concurrent calls share one start; connectionId reuse', async () => {
  const client = new AluviaClient(clientOptions());
  assert.equal(client.connectionId, undefined);
  const [a, b] = await Promise.all([client.start(), client.start()]);
  assert.equal(a, b);
  assert.equal(await client.start(), a);
  const id = client.connectionId;
  await a.close();

  const before = (await api.account.connections.list()).length;
  const reuse = new AluviaClient(clientOptions({ connectionId: id }));
  const conn = await reuse.start();
  assert.equal(reuse.connectionId, id);
  assert.equal((await api.account.connections.list()).length, before, 'no new connection was created');
  await conn.close();
  assert.throws(() => new AluviaClient(clientOptions({ connectionId: Number.NaN })), {
    message: 'connectionId must be a finite number',
  });
  assert.throws(() => new AluviaClient(clientOptions({ connectionId: Infinity })), {
    message: 'connectionId must be a finite number',
  });
});

test('strict and non-strict start', async () => {
  const strict = new AluviaClient(clientOptions({ apiKey: 'wrong' }));
  await assert.rejects(strict.start(), InvalidApiKeyError);
  await strict.stop();

  const loose = new AluviaClient(clientOptions({ apiKey: 'wrong', strict: false }));
  const conn = await loose.start();
  try {
    assert.equal(await seenVia(conn), '127.0.0.1', 'no config → direct');
    assert.equal(loose.connectionId, undefined);
    await assert.rejects(loose.updateRules(['*']), (err) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.message, 'No account connection ID available');
      return true;
    });
  } finally {
    await conn.close();
  }
});

test('a port in use is a ProxyStartError', async () => {
  const blocker = net.createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  try {
    const client = new AluviaClient(clientOptions({ localPort: blocker.address().port }));
    await assert.rejects(client.start(), (err) => {
      assert.ok(err instanceof ProxyStartError);
      assert.match(err.message, /^Failed to start proxy server: .*in use/i);
      return true;
    });
    await client.stop();
  } finally {
    blocker.close();
  }
});

test('every adapter carries a real request through the proxy', async () => {
  await withClient({}, async (client, connection) => {
    await client.updateRules(['127.0.0.1']);
    const exit = await exitAddressOf(client.connectionId);
    const url = `${target.url}/adapter`;

    assert.deepEqual(connection.asPlaywright(), { server: connection.url });
    assert.deepEqual(connection.asPuppeteer(), [`--proxy-server=${connection.url}`]);
    assert.equal(connection.asSelenium(), `--proxy-server=${connection.url}`);

    const agents = connection.asNodeAgents();
    assert.equal(connection.asNodeAgents(), agents, 'agents are cached');
    const viaAgent = await new Promise((resolve, reject) => {
      http
        .get(url, { agent: agents.http }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(JSON.parse(body)));
        })
        .on('error', reject);
    });
    assert.equal(viaAgent.remoteAddress, exit);

    const axios = require('axios');
    const viaAxios = await axios.get(url, connection.asAxiosConfig());
    assert.equal(viaAxios.data.remoteAddress, exit);

    const { default: got } = await import('got');
    const viaGot = await got(url, connection.asGotOptions()).json();
    assert.equal(viaGot.remoteAddress, exit);

    const undici = require('undici');
    const dispatcher = connection.asUndiciDispatcher();
    assert.equal(connection.asUndiciDispatcher(), dispatcher);
    const viaUndici = await undici.request(url, { dispatcher });
    assert.equal((await viaUndici.body.json()).remoteAddress, exit);

    const viaFetch = await connection.asUndiciFetch()(url);
    assert.equal((await viaFetch.json()).remoteAddress, exit);

    const stats = client.getTrafficStats();
    const gw = stats.find((s) => s.hostname === '127.0.0.1' && s.route === 'gateway');
    assert.ok(gw, JSON.stringify(stats));
    // undici's ProxyAgent tunnels even plain HTTP; the others send absolute-form requests.
    assert.equal(gw.requests + gw.tunnels, 5, JSON.stringify(gw));
    assert.ok(gw.requests >= 3);
    assert.ok(gw.bytesReceived > 0);

    const text = JSON.stringify(connection);
    const creds = await api.account.connections.get(client.connectionId);
    assert.ok(!text.includes(creds.proxy_password), 'no password on the connection object');
    assert.ok(!text.includes(creds.proxy_username), 'no username on the connection object');
  });
});

test('gateway down: proxied requests get 502 with a reason, direct ones still work', async () => {
  await withClient({}, async (client, connection) => {
    await client.updateRules(['127.0.0.1']);
    const creds = await api.account.connections.get(client.connectionId);
    await admin(emu, 'POST', '/_emulator/faults', { gatewayDown: true });
    try {
      const r = await viaProxy(connection.url, `${target.url}/down`);
      assert.equal(r.status, 502);
      assert.ok(r.body.length > 0 && !r.body.includes('\n\n'), r.body);
      assert.ok(!r.body.includes(creds.proxy_password));
      const t = await viaTunnel(connection.url, `127.0.0.1:${target.port}`);
      assert.equal(t.connectStatus, 502);
      await client.updateRules([]);
      assert.equal(await seenVia(connection), '127.0.0.1');
    } finally {
      await admin(emu, 'DELETE', '/_emulator/faults');
    }
  });
});

test('malformed requests get 400 and the proxy keeps serving', async () => {
  await withClient({}, async (_client, connection) => {
    const raw = (text) =>
      new Promise((resolve) => {
        const s = net.connect(connection.port, '127.0.0.1', () => s.write(text));
        let data = '';
        s.on('data', (c) => {
          data += c;
          if (data.includes('\r\n\r\n')) s.destroy();
        });
        s.on('close', () => resolve(data));
        s.on('error', () => resolve(data));
        setTimeout(() => s.destroy(), 5000).unref();
      });
    assert.match(await raw('CONNECT nohostport HTTP/1.1\r\nHost: nohostport\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await raw('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await raw('GET /relative HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.equal(await seenVia(connection), '127.0.0.1');
  });
});

test('credentials never appear in logs, even at debug level and on failures', async () => {
  const script = `
    const { AluviaClient } = require(${JSON.stringify(root)} + '/lib/index.js');
    const http = require('node:http');
    (async () => {
      const client = new AluviaClient(${JSON.stringify(clientOptions({ logLevel: 'debug' }))});
      const c = await client.start();
      await client.updateRules(['*']);
      const get = (u) => new Promise((res) => http.get({ host: '127.0.0.1', port: c.port, path: u }, (r) => { r.resume(); r.on('end', res); }).on('error', res));
      await get(${JSON.stringify(`${target.url}/log`)});
      await fetch(${JSON.stringify(`${emu.apiBaseUrl.replace(/\/v1$/, '')}/_emulator/faults`)}, { method: 'POST', headers: {'content-type':'application/json', authorization: ${JSON.stringify(`Bearer ${emu.apiKey}`)}}, body: JSON.stringify({ gatewayDown: true }) });
      await get(${JSON.stringify(`${target.url}/log2`)});
      await fetch(${JSON.stringify(`${emu.apiBaseUrl.replace(/\/v1$/, '')}/_emulator/faults`)}, { method: 'DELETE', headers: { authorization: ${JSON.stringify(`Bearer ${emu.apiKey}`)} } });
      console.log(JSON.stringify({ id: client.connectionId }));
      await c.close();
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const { code, stdout: out, stderr: err } = await runNode(['-e', script]);
  assert.equal(code, 0, err);
  const { id } = JSON.parse(out.trim().split('\n').at(-1));
  const creds = await api.account.connections.get(id);
  assert.ok(err.length > 0, 'debug logging printed something');
  assert.ok(!err.includes(creds.proxy_password), 'no password in logs');
  assert.ok(!err.includes(emu.apiKey), 'no API key in logs');
  assert.ok(!(out + err).includes(Buffer.from(`${creds.proxy_username}:${creds.proxy_password}`).toString('base64')));
});
