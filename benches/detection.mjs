// Section "detection": verdicts and their latency on the vendor corpus
// (__test__/corpus/vendors), in one browser, one page after another.
//
//   - per vendor: block/challenge pages caught (blocked or suspected) out of
//     the total, and ordinary pages (articles, 404 pages, captcha-widget
//     forms) flagged blocked or suspected;
//   - navigation start → first verdict for the page, and, for verdicts of the
//     full pass, the page's load event → verdict (median, p90).
//
// BENCH_DETECTION_ROUNDS (default 2) passes over the corpus. BENCH_SDK points
// at another checkout's lib/index.js to measure its engine on the same
// corpus (a before/after comparison).
import { createRequire } from 'node:module';
import { serveLoopback, startEmulator } from './lib/loopback.mjs';
import { VENDOR_PAGES, corpusHandler } from '../__test__/corpus/vendors/index.mjs';

const require = createRequire(import.meta.url);
const sdk = require(process.env.BENCH_SDK ?? '../lib/index.js');

export const name = 'detection';
export const title = 'Block detection on the vendor corpus: verdicts per vendor, navigation/load → verdict (loopback)';

const ROUNDS = Number(process.env.BENCH_DETECTION_ROUNDS ?? 2);
const VERDICT_TIMEOUT_MS = 12_000;

const quantile = (xs, q) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const isCaught = (r) => r?.blockStatus === 'blocked' || r?.blockStatus === 'suspected';

export async function run({ res, log }) {
  const base = await serveLoopback(res, 'corpus server', corpusHandler);
  log('starting the emulator');
  let onResult = () => {};
  const { options } = await startEmulator(sdk, res, {
    startPlaywright: true,
    blockDetection: { onDetection: (result) => onResult(result, performance.now()) },
  });
  const client = new sdk.AluviaClient(options);
  let connection = null;
  res.defer('aluvia client', () => (connection ? connection.close() : client.stop()));
  connection = await client.start();
  const tab = await connection.browserContext.newPage();

  const rows = new Map(); // vendor → { blockTotal, caught, ordinaryTotal, flaggedBlocked, flaggedSuspected, missed: [] }
  const navToVerdict = [];
  const loadToVerdict = [];
  for (let round = 0; round < ROUNDS; round++) {
    log(`round ${round + 1}/${ROUNDS}: ${VENDOR_PAGES.length} pages`);
    for (const p of VENDOR_PAGES) {
      const url = `${base}${p.path}`;
      let tLoad = null;
      const onLoad = () => (tLoad ??= performance.now());
      tab.once('load', onLoad);
      let timer;
      const verdict = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), VERDICT_TIMEOUT_MS);
        onResult = (r, t) => {
          if (r.url !== url) return;
          // A page that reloads itself: its verdict is the one that names the loop.
          if (p.reloads && !r.signals.some((s) => s.name === 'self_reload_loop')) return;
          resolve({ r, t });
        };
      });
      const t0 = performance.now();
      await tab.goto(url, { waitUntil: 'commit' }).catch(() => {});
      const got = await verdict;
      clearTimeout(timer);
      tab.off('load', onLoad);
      onResult = () => {};

      if (got) {
        navToVerdict.push(got.t - t0);
        if (got.r.pass === 'full' && tLoad !== null && !p.reloads) loadToVerdict.push(got.t - tLoad);
      }
      if (round > 0) continue; // verdicts are counted once
      const row = rows.get(p.vendor) ?? {
        blockTotal: 0,
        caught: 0,
        ordinaryTotal: 0,
        flaggedBlocked: 0,
        flaggedSuspected: 0,
        missed: [],
      };
      rows.set(p.vendor, row);
      if (p.expect === 'caught') {
        row.blockTotal++;
        if (isCaught(got?.r)) row.caught++;
        else row.missed.push(`${p.path}: ${got ? got.r.blockStatus : 'no verdict'}`);
      } else {
        row.ordinaryTotal++;
        if (got?.r.blockStatus === 'blocked') row.flaggedBlocked++;
        if (got?.r.blockStatus === 'suspected') row.flaggedSuspected++;
        if (got?.r.blockStatus !== 'clear') row.missed.push(`${p.path}: ${got ? got.r.blockStatus : 'no verdict'}`);
      }
    }
  }

  const vendors = [...rows.entries()];
  const sum = (k) => vendors.reduce((n, [, r]) => n + r[k], 0);
  const data = {
    rounds: ROUNDS,
    pages: VENDOR_PAGES.length,
    perVendor: Object.fromEntries(
      vendors.map(([v, r]) => [
        v,
        {
          caught: r.caught,
          blockTotal: r.blockTotal,
          ordinaryTotal: r.ordinaryTotal,
          flaggedBlocked: r.flaggedBlocked,
          flaggedSuspected: r.flaggedSuspected,
        },
      ]),
    ),
    ordinaryFlaggedBlocked: sum('flaggedBlocked'),
    navToVerdictMs: {
      median: quantile(navToVerdict, 0.5),
      p90: quantile(navToVerdict, 0.9),
      samples: navToVerdict.length,
    },
    loadToVerdictMs: {
      median: quantile(loadToVerdict, 0.5),
      p90: quantile(loadToVerdict, 0.9),
      samples: loadToVerdict.length,
    },
  };
  return {
    tables: [
      {
        title: 'verdicts per vendor (first round)',
        head: [
          'vendor',
          'block/challenge pages caught',
          'ordinary pages flagged blocked',
          'ordinary pages flagged suspected',
        ],
        rows: [
          ...vendors.map(([v, r]) => [
            v,
            r.blockTotal ? `${r.caught}/${r.blockTotal}` : '-',
            `${r.flaggedBlocked}/${r.ordinaryTotal}`,
            `${r.flaggedSuspected}/${r.ordinaryTotal}`,
          ]),
          [
            'all',
            `${sum('caught')}/${sum('blockTotal')}`,
            `${sum('flaggedBlocked')}/${sum('ordinaryTotal')}`,
            `${sum('flaggedSuspected')}/${sum('ordinaryTotal')}`,
          ],
        ],
      },
      {
        title: `latency over ${ROUNDS} round(s) of ${VENDOR_PAGES.length} pages`,
        head: ['measure', 'median ms', 'p90 ms', 'samples'],
        rows: [
          [
            'navigation start → verdict (every page)',
            fmt(data.navToVerdictMs.median),
            fmt(data.navToVerdictMs.p90),
            navToVerdict.length,
          ],
          [
            'load event → full-pass verdict',
            fmt(data.loadToVerdictMs.median),
            fmt(data.loadToVerdictMs.p90),
            loadToVerdict.length,
          ],
        ],
      },
    ],
    checks: [],
    notes: [
      'One browser, one tab; each page is navigated to and its first verdict awaited (for the self-reloading Sucuri page, the first verdict naming self_reload_loop).',
      'A verdict of the fast pass (status and headers alone, score ≥ 0.9) comes before the load event, so only full-pass verdicts enter the load → verdict row.',
      ...vendors.flatMap(([v, r]) => (r.missed.length ? [`${v}: ${r.missed.join('; ')}`] : [])),
    ],
    data,
  };
}
