// Failures are visible where an agent looks: a gateway that fails is said
// once per host and cause in the session's log and shown by `session get` as
// `lastProxyError`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, withEmulator, admin, viaProxy, eventually } from './helpers.mjs';
import { Sandbox, pageHandler } from './sessions.mjs';

test('a gateway outage is one log line per host and cause, and session get shows it as lastProxyError', async () => {
  const origin = await serve(pageHandler);
  try {
    await withEmulator(async (emu) => {
      const sb = new Sandbox(emu, 'gwfail');
      try {
        const start = await sb.cli(['session', 'start', `${origin.url}/`, '--browser-session', 'gw']);
        assert.equal(start.code, 0, start.stderr);
        const before = await sb.cli(['session', 'get', '--browser-session', 'gw']);
        assert.equal(before.json.lastProxyError, null, 'no failure yet');

        const rules = await sb.cli(['session', 'set-rules', '127.0.0.1', '--browser-session', 'gw']);
        assert.equal(rules.code, 0, rules.stderr);
        const { proxyUrl } = sb.readLock('gw');
        // The gateway stops listening (before the first request on its
        // route, so no pooled connection to it is left open).
        assert.equal((await admin(emu, 'POST', '/_emulator/faults', { gatewayDown: true })).status, 200);
        const t0 = Date.now();
        // The daemon picks the new rules up from the API within a second or so.
        await eventually(async () => (await viaProxy(proxyUrl, `${origin.url}/first`)).status === 502, {
          what: 'the gateway route',
        });
        for (let i = 0; i < 6; i++) {
          const r = await viaProxy(proxyUrl, `${origin.url}/down-${i}`);
          assert.equal(r.status, 502, r.body);
        }
        const seen = await eventually(
          async () => (await sb.cli(['session', 'get', '--browser-session', 'gw'])).json.lastProxyError,
          { what: 'lastProxyError' },
        );
        assert.deepEqual(Object.keys(seen).sort(), ['at', 'hostname', 'reason', 'route']);
        assert.equal(seen.hostname, '127.0.0.1');
        assert.equal(seen.route, 'gateway');
        assert.ok(Date.parse(seen.at) >= t0 - 1000, seen.at);
        assert.match(seen.reason, /refused|failed|unreachable|cannot/i);
        assert.ok(!seen.reason.includes(sb.readLock('gw').proxyPassword ?? '\0'), 'no password');

        const lines = sb
          .log('gw')
          .split('\n')
          .filter((l) => l.includes('the gateway failed for 127.0.0.1'));
        assert.equal(lines.length, 1, lines.join('\n'));

        // The same failure on another host is its own line.
        const other = await sb.cli(['session', 'set-rules', 'localhost', '--browser-session', 'gw']);
        assert.equal(other.code, 0, other.stderr);
        await eventually(
          async () => (await viaProxy(proxyUrl, `http://localhost:${origin.port}/down-other`)).status === 502,
          { what: 'the gateway route for localhost' },
        );
        await eventually(() => sb.log('gw').includes('the gateway failed for localhost'), {
          what: 'the line for localhost',
        });
        assert.equal(
          sb
            .log('gw')
            .split('\n')
            .filter((l) => l.includes('the gateway failed for')).length,
          2,
        );
      } finally {
        await admin(emu, 'POST', '/_emulator/faults', { gatewayDown: false }).catch(() => {});
        await sb.dispose();
      }
    });
  } finally {
    await origin.close();
  }
});
