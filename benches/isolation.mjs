// Section "isolation": what a browser in its own network namespace costs,
// against the same browser on the host's network, measured in this run.
//
//   1. client.start() with startPlaywright → a ready connection.browser.
//   2. Memory of the browser: the PSS of every process under this one
//      (Chromium's processes and, when isolated, the namespace's socket
//      factory), read from /proc/<pid>/smaps_rollup after the first page.
//   3. A page load through the proxy (the isolated browser's connections
//      take one more loopback hop, through the engine's relay).
//
// The modes alternate run by run, so that a slow moment of this shared
// machine falls on both.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { serveLoopback, startEmulator } from './lib/loopback.mjs';
import { processTree } from './lib/native.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');

export const name = 'isolation';
export const title = 'Browser isolation: start time, memory and page loads, namespace vs host network';

const RUNS = process.env.BENCH_ISOLATION_RUNS ? Number(process.env.BENCH_ISOLATION_RUNS) : 6;
const LOADS = 10;
const MODES = ['none', 'namespace'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

/** PSS in KiB of `pid` (0 when it is gone or unreadable). */
function pssKiB(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+) kB/m);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export async function run({ res, log }) {
  const base = await serveLoopback(res, 'page server', (req, resp) => {
    resp.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    resp.end(`<!doctype html><title>${req.url}</title><p>An ordinary page.</p>`);
  });
  log('starting the emulator');
  const { options } = await startEmulator(sdk, res, { startPlaywright: true, blockDetection: { enabled: false } });

  const data = Object.fromEntries(
    MODES.map((m) => [m, { startMs: [], pssMiB: [], processes: [], loadMs: [], isolation: [] }]),
  );
  const outer = process.env.ALUVIA_BROWSER_ISOLATION;
  try {
    for (let i = 0; i < RUNS; i++) {
      for (const mode of i % 2 ? [...MODES].reverse() : MODES) {
        process.env.ALUVIA_BROWSER_ISOLATION = mode;
        const client = new sdk.AluviaClient(options);
        let connection = null;
        const close = res.defer(`aluvia client ${mode} #${i + 1}`, () =>
          connection ? connection.close() : client.stop(),
        );
        try {
          log(`${mode} run ${i + 1}/${RUNS}`);
          const t0 = performance.now();
          connection = await client.start();
          data[mode].startMs.push(performance.now() - t0);
          data[mode].isolation.push(connection.browserIsolation);
          const page = await connection.browserContext.newPage();
          for (let j = 0; j < LOADS; j++) {
            const t = performance.now();
            const r = await page.goto(`${base}/page-${i}-${j}`);
            if (r?.status() !== 200) throw new Error(`load → ${r?.status()}`);
            data[mode].loadMs.push(performance.now() - t);
          }
          const pids = processTree(process.pid);
          data[mode].processes.push(pids.length);
          data[mode].pssMiB.push(pids.reduce((sum, p) => sum + pssKiB(p), 0) / 1024);
        } finally {
          await close();
        }
      }
    }
  } finally {
    if (outer === undefined) delete process.env.ALUVIA_BROWSER_ISOLATION;
    else process.env.ALUVIA_BROWSER_ISOLATION = outer;
  }

  const m = (mode, key) => median(data[mode][key]);
  const ratio = (key) => m('namespace', key) / m('none', key);
  const isolated = data.namespace.isolation.every((x) => x === 'namespace');
  return {
    tables: [
      {
        title: `Per session, median of ${RUNS} runs per mode (${LOADS} page loads each)`,
        head: ['measure', 'host network', 'namespace', 'namespace − host', 'namespace / host'],
        rows: [
          [
            'client.start() ms',
            fmt(m('none', 'startMs')),
            fmt(m('namespace', 'startMs')),
            fmt(m('namespace', 'startMs') - m('none', 'startMs')),
            fmt(ratio('startMs'), 2),
          ],
          [
            'browser PSS MiB',
            fmt(m('none', 'pssMiB')),
            fmt(m('namespace', 'pssMiB')),
            fmt(m('namespace', 'pssMiB') - m('none', 'pssMiB')),
            fmt(ratio('pssMiB'), 2),
          ],
          [
            'browser processes',
            fmt(m('none', 'processes'), 0),
            fmt(m('namespace', 'processes'), 0),
            fmt(m('namespace', 'processes') - m('none', 'processes'), 0),
            '',
          ],
          [
            'page load ms',
            fmt(m('none', 'loadMs'), 2),
            fmt(m('namespace', 'loadMs'), 2),
            fmt(m('namespace', 'loadMs') - m('none', 'loadMs'), 2),
            fmt(ratio('loadMs'), 2),
          ],
        ],
      },
    ],
    checks: [
      {
        key: 'startCost',
        label: 'start time added by the namespace',
        value: m('namespace', 'startMs') - m('none', 'startMs'),
        display: isolated
          ? `${fmt(m('namespace', 'startMs') - m('none', 'startMs'))} ms`
          : `not isolated here (${data.namespace.isolation.join(',')})`,
        target: '≤ 50 ms (a few tens of milliseconds)',
        met: isolated && m('namespace', 'startMs') - m('none', 'startMs') <= 50,
      },
    ],
    notes: [
      'Both modes run the same Chromium with the same flags; only ALUVIA_BROWSER_ISOLATION differs. Runs alternate between the modes.',
      "PSS is each process's proportional share of its memory, so pages shared between processes are not counted twice; the namespace's socket factory is a forked copy of this process and shares almost all of it.",
    ],
    data,
  };
}
