import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sdk, serve, recorder, admin } from './helpers.mjs';

const { AluviaApi, AluviaClient, ApiError, InvalidApiKeyError, MissingApiKeyError } = sdk;

let emu;
let rec;
let api;

before(async () => {
  emu = await sdk.startEmulator({ site: false });
  rec = await recorder(emu.apiBaseUrl);
  api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: rec.baseUrl });
});

after(async () => {
  await rec?.close();
  await emu?.stop();
});

function last() {
  return rec.seen[rec.seen.length - 1];
}

function assertCommonHeaders(seen, { body = false } = {}) {
  assert.equal(seen.headers.authorization, `Bearer ${emu.apiKey}`);
  assert.equal(seen.headers.accept, 'application/json');
  if (body) assert.equal(seen.headers['content-type'], 'application/json');
  else assert.equal(seen.headers['content-type'], undefined);
}

test('account.get sends GET /account and unwraps the envelope', async () => {
  const account = await api.account.get();
  assert.equal(last().method, 'GET');
  assert.equal(last().url, '/v1/account');
  assertCommonHeaders(last());
  assert.equal(typeof account.account_id, 'number');
  assert.equal(account.success, undefined, 'the envelope is unwrapped');
});

test('account.usage.get passes start/end and leaves out missing ones', async () => {
  const usage = await api.account.usage.get({ start: '2026-01-01', end: '2026-12-31T00:00:00Z' });
  assert.equal(last().url, '/v1/account/usage?start=2026-01-01&end=2026-12-31T00%3A00%3A00Z');
  assert.equal(typeof usage.data_used_bytes, 'number');
  await api.account.usage.get({ start: undefined, end: null });
  assert.equal(last().url, '/v1/account/usage');
  await api.account.usage.get();
  assert.equal(last().url, '/v1/account/usage');
});

test('a 422 error envelope becomes an ApiError with the documented message', async () => {
  await assert.rejects(api.account.usage.get({ start: 'yesterday' }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.name, 'ApiError');
    assert.equal(err.statusCode, 422);
    assert.equal(
      err.message,
      'API request failed (HTTP 422) code=validation_error message=Validation failed. details={"start":["must be an ISO 8601 date"]}',
    );
    return true;
  });
});

test('account.payments.list', async () => {
  const payments = await api.account.payments.list({ start: '2026-01-01' });
  assert.equal(last().method, 'GET');
  assert.equal(last().url, '/v1/account/payments?start=2026-01-01');
  assert.ok(Array.isArray(payments));
});

test('connections: create, list, get with ETag/304, patch, delete', async () => {
  const created = await api.account.connections.create({ rules: ['example.com'], description: 'test' });
  assert.equal(last().method, 'POST');
  assert.equal(last().url, '/v1/account/connections');
  assertCommonHeaders(last(), { body: true });
  assert.deepEqual(JSON.parse(last().body), { rules: ['example.com'], description: 'test' });
  const id = created.connection_id;
  assert.equal(typeof id, 'number');
  assert.ok(created.proxy_username && created.proxy_password);
  assert.deepEqual(created.rules, ['example.com']);

  const list = await api.account.connections.list();
  assert.equal(last().url, '/v1/account/connections');
  assert.ok(list.some((c) => c.connection_id === id));

  const got = await api.account.connections.get(id);
  assert.equal(last().url, `/v1/account/connections/${id}`);
  assert.equal(last().headers['if-none-match'], undefined);
  assert.equal(got.connection_id, id);

  const raw = await api.request({ method: 'GET', path: `/account/connections/${id}` });
  assert.equal(raw.status, 200);
  assert.match(raw.etag, /^".+"$/);
  assert.equal(await api.account.connections.get(id, { etag: raw.etag }), null, '304 → null');
  assert.equal(last().headers['if-none-match'], raw.etag);

  const patched = await api.account.connections.patch(String(id), { rules: ['a.com', 'b.com'], target_geo: 'us_ca' });
  assert.equal(last().method, 'PATCH');
  assertCommonHeaders(last(), { body: true });
  assert.deepEqual(patched.rules, ['a.com', 'b.com']);
  assert.equal(patched.target_geo, 'us_ca');
  const afterPatch = await api.account.connections.get(id, { etag: raw.etag });
  assert.notEqual(afterPatch, null, 'the ETag changed with the PATCH');
  assert.deepEqual(afterPatch.rules, ['a.com', 'b.com']);

  const deleted = await api.account.connections.delete(id);
  assert.equal(last().method, 'DELETE');
  assert.deepEqual(deleted, { connection_id: String(id), deleted: true });
  await assert.rejects(api.account.connections.get(id), (err) => err instanceof ApiError && err.statusCode === 404);
});

test('rules that are not an array of strings are a 422 ApiError', async () => {
  await assert.rejects(api.account.connections.create({ rules: 'example.com' }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.statusCode, 422);
    assert.match(
      err.message,
      /^API request failed \(HTTP 422\) code=validation_error message=Validation failed\. details=\{"rules"/,
    );
    return true;
  });
});

test('rules with control characters are refused as an Error before any request', async () => {
  const created = await api.account.connections.create({ rules: ['keep.com'] });
  const id = created.connection_id;
  const { etag } = await api.request({ method: 'GET', path: `/account/connections/${id}` });
  const listed = (await api.account.connections.list()).length;
  const sent = rec.seen.length;
  const refused = (shown) => (err) => {
    assert.equal(err.constructor, Error);
    assert.equal(err.message, `Invalid rule '${shown}': rules cannot contain control characters.`);
    return true;
  };
  await assert.rejects(api.account.connections.patch(id, { rules: ['ok.com', 'f\x01.com'] }), refused('f\\u{1}.com'));
  await assert.rejects(
    api.account.connections.patch(String(id), { rules: ['\x1b[31mred.com'] }),
    refused('\\u{1b}[31mred.com'),
  );
  await assert.rejects(
    api.account.connections.patch(id, { rules: ['del\x7f.com'], target_geo: 'us' }),
    refused('del\\u{7f}.com'),
  );
  await assert.rejects(api.account.connections.create({ rules: ['nel\u0085.com'] }), refused('nel\\u{85}.com'));
  await assert.rejects(api.account.connections.create({ rules: ['a.com', 'b\tc.com'] }), refused('b\\tc.com'));
  assert.equal(rec.seen.length, sent, 'nothing was sent');

  // A caller's fetch is never called either.
  const calls = [];
  const viaFetch = new AluviaApi({
    apiKey: emu.apiKey,
    apiBaseUrl: emu.apiBaseUrl,
    fetch: (url, init) => {
      calls.push(url);
      return fetch(url, init);
    },
  });
  await assert.rejects(viaFetch.account.connections.patch(id, { rules: ['x\u009b31m'] }), refused('x\\u{9b}31m'));
  await assert.rejects(viaFetch.account.connections.create({ rules: ['\x07'] }), refused('\\u{7}'));
  assert.deepEqual(calls, []);

  assert.equal(await api.account.connections.get(id, { etag }), null, 'the connection is unchanged');
  assert.deepEqual((await api.account.connections.get(id)).rules, ['keep.com']);
  assert.equal((await api.account.connections.list()).length, listed, 'no connection was created');
  // Ordinary Unicode is the API's to judge, and it takes it.
  assert.deepEqual((await api.account.connections.patch(id, { rules: ['bücher.de', '*.例え.jp'] })).rules, [
    'bücher.de',
    '*.例え.jp',
  ]);
  await api.account.connections.delete(id);
});

test('geos.list', async () => {
  const geos = await api.geos.list();
  assert.equal(last().url, '/v1/geos');
  const codes = geos.map((g) => g.code);
  for (const code of ['us', 'us_ca', 'us_ny', 'gb', 'de']) assert.ok(codes.includes(code), code);
  assert.ok(geos.every((g) => typeof g.label === 'string'));
});

test('request(): raw result, query rules, never throws on status', async () => {
  const r = await api.request({ method: 'GET', path: '/geos', query: { a: null, b: undefined, c: [1, 'x'], d: true } });
  assert.equal(last().url, '/v1/geos?c=1&c=x&d=true');
  assert.equal(r.status, 200);
  assert.equal(r.body.success, true);
  const missing = await api.request({ method: 'GET', path: '/nope' });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.success, false);
  const custom = await api.request({ method: 'GET', path: '/account', headers: { 'X-Trace': 'abc' } });
  assert.equal(custom.status, 200);
  assert.equal(last().headers['x-trace'], 'abc');
});

test('a wrong key is an InvalidApiKeyError with the documented message', async () => {
  const bad = new AluviaApi({ apiKey: 'wrong', apiBaseUrl: emu.apiBaseUrl });
  await assert.rejects(bad.account.get(), (err) => {
    assert.ok(err instanceof InvalidApiKeyError);
    assert.equal(err.name, 'InvalidApiKeyError');
    assert.equal(
      err.message,
      'Authentication failed (HTTP 401). Check token validity and that you are using an account API token for account endpoints.',
    );
    return true;
  });
  const raw = await bad.request({ method: 'GET', path: '/account' });
  assert.equal(raw.status, 401);
});

test('empty or blank keys are a MissingApiKeyError', () => {
  for (const apiKey of ['', '   ', undefined]) {
    assert.throws(
      () => new AluviaApi({ apiKey }),
      (err) => {
        assert.ok(err instanceof MissingApiKeyError);
        assert.equal(err.name, 'MissingApiKeyError');
        assert.equal(err.message, 'Aluvia apiKey is required');
        return true;
      },
    );
    assert.throws(() => new AluviaClient({ apiKey }), MissingApiKeyError);
  }
});

test('the emulator delay fault turns into ApiError 408', async () => {
  await admin(emu, 'POST', '/_emulator/faults', { apiDelayMs: 1500 });
  try {
    const slow = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl, timeoutMs: 200 });
    await assert.rejects(slow.account.get(), (err) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.statusCode, 408);
      assert.equal(err.message, 'Request timed out after 200ms');
      return true;
    });
  } finally {
    await admin(emu, 'DELETE', '/_emulator/faults');
  }
});

test('the emulator status fault is an ApiError with its status', async () => {
  await admin(emu, 'POST', '/_emulator/faults', { apiStatus: 500, apiFaultCount: 1 });
  await assert.rejects(api.geos.list(), (err) => err instanceof ApiError && err.statusCode === 500);
  assert.ok(Array.isArray(await api.geos.list()), 'the fault was for one request only');
});

test('non-JSON and malformed answers, refused connections and bad base URLs', async () => {
  const odd = await serve((req, res) => {
    if (req.url.startsWith('/text')) {
      res.setHeader('content-type', 'text/html');
      res.end('<html>hello</html>');
    } else {
      res.setHeader('content-type', 'application/json');
      res.end('{"success": tru');
    }
  });
  try {
    const a = new AluviaApi({ apiKey: 'k', apiBaseUrl: odd.url });
    const text = await a.request({ method: 'GET', path: '/text' });
    assert.deepEqual(text, { status: 200, etag: null, body: null });
    await assert.rejects(a.account.get(), (err) => {
      assert.ok(err instanceof ApiError);
      assert.match(err.message, /^API response is not valid JSON \(HTTP 200\): /);
      return true;
    });
    const malformed = await a.request({ method: 'GET', path: '/account' });
    assert.equal(malformed.body, null);
  } finally {
    await odd.close();
  }

  const closed = await serve(() => {});
  const deadUrl = closed.url;
  await closed.close();
  const refused = new AluviaApi({ apiKey: 'k', apiBaseUrl: deadUrl });
  await assert.rejects(refused.account.get(), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.statusCode, undefined);
    assert.ok(err.message.startsWith(`API request failed: cannot reach ${deadUrl}`), err.message);
    assert.ok(!err.message.includes('Bearer'));
    return true;
  });

  assert.throws(
    () => new AluviaApi({ apiKey: 'k', apiBaseUrl: 'not a url' }),
    (err) => {
      assert.ok(err instanceof ApiError);
      assert.match(err.message, /^Invalid apiBaseUrl 'not a url'/);
      return true;
    },
  );
});

test('a custom fetch is used for every request', async () => {
  const calls = [];
  const myFetch = async (url, init) => {
    calls.push({ url, init });
    return fetch(url, init);
  };
  const viaFetch = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl, fetch: myFetch });
  const geos = await viaFetch.geos.list();
  assert.ok(geos.length > 0);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, `${emu.apiBaseUrl}/geos`);
  assert.equal(calls[0].init.method, 'GET');
  assert.equal(calls[0].init.headers.Authorization, `Bearer ${emu.apiKey}`);
  const created = await viaFetch.account.connections.create({ rules: [] });
  assert.equal(calls[1].init.headers['Content-Type'], 'application/json');
  const raw = await viaFetch.request({ method: 'GET', path: `/account/connections/${created.connection_id}` });
  assert.equal(await viaFetch.account.connections.get(created.connection_id, { etag: raw.etag }), null);
  await assert.rejects(
    new AluviaApi({ apiKey: 'bad', apiBaseUrl: emu.apiBaseUrl, fetch: myFetch }).account.get(),
    InvalidApiKeyError,
  );

  const hanging = (_url, init) =>
    new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  const slow = new AluviaApi({ apiKey: 'k', apiBaseUrl: emu.apiBaseUrl, fetch: hanging, timeoutMs: 100 });
  await assert.rejects(
    slow.geos.list(),
    (err) => err instanceof ApiError && err.statusCode === 408 && err.message === 'Request timed out after 100ms',
  );
});
