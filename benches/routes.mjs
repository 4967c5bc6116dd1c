// Section "routes": what a route change and the same-user check cost.
//
//   1. A keep-alive client that tunnels like a browser (undici's ProxyAgent:
//      one CONNECT tunnel per host, kept open) loads a page; the rules then
//      flip the host between direct and the gateway. Measured: how long
//      updateRules() takes (PATCH to the API + closing the tunnels on the old
//      route), and the time from updateRules() resolving to the first response
//      on the new route (which needs a new tunnel), against the same load on
//      an unchanged route in the same run. Every first load is checked to
//      come from the new route (the origin sees the exit address).
//   2. The same-user check the proxy runs on every accepted connection (one
//      sock_diag query), against the whole cost of a fresh connection's
//      request through the proxy, in the same run.
//
// Everything runs on loopback in this process (the proxy on Rust threads).
import http from 'node:http';
import { createRequire } from 'node:module';
import { serveLoopback, startClient } from './lib/loopback.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');
const native = require('../lib/native.js');
const { emulatorExitAddress } = require('../lib/emulator.js');

export const name = 'routes';
export const title = 'Route changes on open connections, and the same-user check (loopback)';

const FLIPS = Number(process.env.BENCH_ROUTE_FLIPS ?? 30);
const CHECKS = 20_000;
const FRESH = 300;

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const median = (xs) => quantile(xs, 0.5);
const ms = (x) => `${x.toFixed(2)} ms`;

export async function run({ res, log }) {
  // The origin answers with the address it saw.
  const target = `${await serveLoopback(res, 'origin', (req, r) => r.end(req.socket.remoteAddress))}/`;
  log('starting the emulator and our proxy');
  const { client, connection } = await startClient(sdk, res);
  const fetchVia = connection.asUndiciFetch();
  const load = async () => {
    const t = performance.now();
    const peer = await (await fetchVia(target)).text();
    return { ms: performance.now() - t, peer };
  };
  const conn = await client.api.account.connections.get(client.connectionId);
  const gatewayPeer = emulatorExitAddress(conn.session_id, conn.target_geo);

  // 1. Route flips.
  log(`${FLIPS} route flips`);
  const update = [];
  const first = [];
  const steady = [];
  let wrongRoute = 0;
  await load();
  for (let i = 0; i < FLIPS; i++) {
    const toGateway = i % 2 === 0;
    for (let k = 0; k < 3; k++) steady.push((await load()).ms);
    const t0 = performance.now();
    await client.updateRules(toGateway ? ['127.0.0.1'] : []);
    update.push(performance.now() - t0);
    const got = await load();
    first.push(got.ms);
    if (got.peer !== (toGateway ? gatewayPeer : '127.0.0.1')) wrongRoute++;
  }

  // 2. The same-user check against a fresh connection's whole request.
  log('same-user check');
  const checkNs = native.benchSameUserCheck(CHECKS);
  const agent = connection.asNodeAgents().http;
  agent.keepAlive = false;
  const fresh = [];
  for (let i = 0; i < FRESH; i++) {
    const t = performance.now();
    await new Promise((resolve, reject) => {
      http
        .get(target, { agent, headers: { connection: 'close' } }, (r) => {
          r.resume();
          r.on('end', resolve);
        })
        .on('error', reject);
    });
    fresh.push(performance.now() - t);
  }
  const freshMedianUs = median(fresh) * 1000;
  const checkShare = checkNs / 1000 / freshMedianUs;

  const ratio = median(first) / median(steady);
  return {
    name,
    title,
    tables: [
      {
        title: 'A keep-alive tunnelling client (undici ProxyAgent) while the rules flip its host',
        head: ['what', 'median', 'p90', 'samples'],
        rows: [
          [
            'updateRules() (PATCH + closing tunnels on the old route)',
            ms(median(update)),
            ms(quantile(update, 0.9)),
            String(update.length),
          ],
          [
            'updateRules() resolved → first response, on the new route',
            ms(median(first)),
            ms(quantile(first, 0.9)),
            String(first.length),
          ],
          [
            'the same load on an unchanged route (baseline)',
            ms(median(steady)),
            ms(quantile(steady, 0.9)),
            String(steady.length),
          ],
        ],
      },
      {
        title: 'The owner check per accepted connection (made before its first byte is read; fails closed)',
        head: ['what', 'time'],
        rows: [
          [
            'one check (sock_diag query of the peer socket: uid, inode, state)',
            `${(checkNs / 1000).toFixed(2)} µs per accepted connection`,
          ],
          ['a fresh connection: connect + GET through the proxy (baseline, median)', `${freshMedianUs.toFixed(1)} µs`],
          ['check / fresh connection', `${(checkShare * 100).toFixed(2)} %`],
        ],
      },
    ],
    checks: [
      {
        key: 'firstLoadOnNewRoute',
        label: 'every first load after updateRules() resolved came from the new route',
        value: FLIPS - wrongRoute,
        display: `${FLIPS - wrongRoute} of ${FLIPS}`,
        target: `${FLIPS} of ${FLIPS}`,
        met: wrongRoute === 0,
      },
    ],
    notes: [
      `First load on the new route / steady load = ${ratio.toFixed(2)}×: the new route needs a new tunnel (TCP, CONNECT, and through the gateway its own CONNECT), which the steady load reuses.`,
      'The check runs once per accepted client connection, never per request: keep-alive connections and tunnels pay it once.',
    ],
    data: { update, first, steady, wrongRoute, checkNs, freshUs: fresh.map((x) => x * 1000) },
  };
}
