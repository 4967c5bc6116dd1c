// Section "ladder": the unblock ladder over HTTPS (h2) on the emulator's
// stricter site, one browser, one rung at a time: from the blocked verdict
// that takes a rung to the first clear verdict of the reloaded page (the
// rung applied and reached open connections, the reload, its verdict),
// median and p90 per rung.
//
//   - rule: the host goes direct and is challenged; the rule moves it to the
//     gateway;
//   - rotate: the host goes through the gateway already, the site flags the
//     connection's current session; a new session id clears it;
//   - geo: the host goes through the gateway already, the site serves one
//     geo; setting it clears it (the ladder takes rotate first, which does
//     not: the time runs from the verdict that takes the geo rung).
//
// BENCH_LADDER_ROUNDS (default 10) rounds per rung.
import { createRequire } from 'node:module';
import { emulatorClientOptions } from '../__test__/helpers.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');

export const name = 'ladder';
export const title = 'The unblock ladder: blocked verdict → first clear verdict per rung (HTTPS h2, loopback)';

const ROUNDS = Number(process.env.BENCH_LADDER_ROUNDS ?? 10);
const ROUND_TIMEOUT_MS = 30_000;
const GEOS = ['us_ca', 'us_ny'];

const quantile = (xs, q) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');

export async function run({ res, log }) {
  const emu = await sdk.startEmulator();
  res.defer('emulator', () => emu.stop());
  const base = emu.apiBaseUrl.replace(/\/v1$/, '');
  const policy = async (body) => {
    const r = await fetch(`${base}/_emulator/site`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${emu.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ flagFirstExit: false, allowedGeos: null, ...body }),
    });
    if (!r.ok) throw new Error(`PUT /_emulator/site: ${r.status}`);
  };
  let onResult = () => {};
  const client = new sdk.AluviaClient(
    emulatorClientOptions(emu, {
      logLevel: 'silent',
      startPlaywright: true,
      trustSpki: [emu.siteSpki],
      blockDetection: {
        autoUnblock: true,
        unblockSteps: ['rule', 'rotate', 'geo'],
        unblockGeos: GEOS,
        onDetection: (result) => onResult(result, performance.now()),
      },
    }),
  );
  let connection = null;
  res.defer('aluvia client', () => (connection ? connection.close() : client.stop()));
  connection = await client.start();
  const tab = await connection.browserContext.newPage();

  /** One round: the time from the verdict that took `step` to the first clear one. */
  async function round(step, path) {
    let timer;
    const done = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no clear verdict for ${path}`)), ROUND_TIMEOUT_MS);
      let took = null;
      onResult = (r, t) => {
        if (!r.url.endsWith(path)) return;
        // Timed from the verdict that took `step` (the geo round takes rotate first).
        if (r.unblock) took = r.unblock.step === step ? t : null;
        else if (r.blockStatus === 'clear' && took !== null) {
          resolve(t - took);
        }
      };
    });
    await tab.goto(new URL(path, emu.siteHttpsUrl).href, { waitUntil: 'commit' }).catch(() => {});
    try {
      return await done;
    } finally {
      clearTimeout(timer);
      onResult = () => {};
    }
  }

  const times = { rule: [], rotate: [], geo: [] };
  for (let i = 0; i < ROUNDS; i++) {
    log(`round ${i + 1}/${ROUNDS}`);
    // rule: the host goes direct again; the site challenges direct visitors only.
    await client.updateRules([]);
    await policy({});
    times.rule.push(await round('rule', `/bench/rule/${i}`));
    // rotate: the session the connection has now is the one the site flags.
    await policy({ flagFirstExit: true });
    times.rotate.push(await round('rotate', `/bench/rotate/${i}`));
    // geo: the site serves the geo the connection does not have.
    const current = (await client.api.account.connections.get(client.connectionId)).target_geo;
    await policy({ allowedGeos: [GEOS.find((g) => g !== current)] });
    times.geo.push(await round('geo', `/bench/geo/${i}`));
  }

  const data = Object.fromEntries(
    Object.entries(times).map(([step, xs]) => [
      step,
      { median: quantile(xs, 0.5), p90: quantile(xs, 0.9), samples: xs.length },
    ]),
  );
  return {
    tables: [
      {
        title: 'blocked verdict → first clear verdict (ms)',
        head: ['rung', 'median', 'p90', 'samples'],
        rows: Object.entries(data).map(([step, d]) => [step, fmt(d.median), fmt(d.p90), String(d.samples)]),
      },
    ],
    checks: [],
    notes: [
      'Each rung: applied (PATCH or rule edit, then the open connections on changed routes closed), the page reloaded, and the reloaded page judged.',
      'The rule rung reloads onto a new gateway tunnel; rotate and geo close every gateway tunnel of the connection first.',
    ],
    data,
  };
}
