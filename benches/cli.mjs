// Section "cli": background browser sessions, measured as a user sees them.
//
//   1. `aluvia session start <local page>` wall time until its JSON is printed
//      (a fresh CLI process each run: Node start, claim, daemon spawn, proxy,
//      Chromium, first navigation, final lock write), then `session close`.
//   2. `aluvia session list` wall time with 1 and with 10 sessions running.
//   3. The idle daemon's memory (RSS): the Node daemon alone, and its
//      Chromium process tree summed.
//
// Everything runs in a private TMPDIR against the emulator; every session is
// closed with `session close --all` when the section ends.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchDir } from './lib/resources.mjs';
import { processTree } from './lib/native.mjs';
import { aluviaEnv } from './lib/sessions.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');
const cli = join(benchDir, '..', 'bin', 'aluvia.js');

export const name = 'cli';
export const title = 'CLI sessions: session start, session list, idle daemon memory';

const env = (k, d) => (process.env[k] ? Number(process.env[k]) : d);
const START_RUNS = env('BENCH_CLI_START_RUNS', 7);
const LIST_RUNS = env('BENCH_CLI_LIST_RUNS', 9);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x) => x.toFixed(0);

function run(args, cliEnv) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cli, ...args], { env: cliEnv, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      let json;
      try {
        json = JSON.parse(out);
      } catch {
        json = null;
      }
      if (code !== 0) reject(new Error(`aluvia ${args.join(' ')} failed: ${out}`));
      else resolve({ ms, json });
    });
  });
}

function rssKb(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export async function run_({ res, log }) {
  const emu = await sdk.startEmulator();
  res.defer('emulator', () => emu.stop());
  const page = http.createServer((_req, resp) => {
    resp.setHeader('content-type', 'text/html');
    resp.end(`<!doctype html><title>Bench</title><p>${'An ordinary page. '.repeat(30)}</p>`);
  });
  page.listen(0, '127.0.0.1');
  await once(page, 'listening');
  res.defer('page server', () => new Promise((r) => page.close(() => r())));
  const url = `http://127.0.0.1:${page.address().port}/`;
  const tmp = mkdtempSync(join(tmpdir(), 'aluvia-bench-cli-'));
  // The default browser kind, as a user who sets nothing gets it.
  const cliEnv = aluviaEnv(emu, tmp, { env: {} });
  res.defer('sessions and temp dir', async () => {
    await run(['session', 'close', '--all'], cliEnv).catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
  });

  // 1. session start → JSON printed.
  const conn = await run(['session', 'start', url, '--browser-session', 'warm'], cliEnv);
  await run(['session', 'close'], cliEnv);
  const connectionId = String(conn.json.connectionId);
  const starts = [];
  for (let i = 0; i < START_RUNS; i++) {
    const r = await run(
      ['session', 'start', url, '--browser-session', `s${i}`, '--connection-id', connectionId],
      cliEnv,
    );
    starts.push(r.ms);
    await run(['session', 'close'], cliEnv);
  }
  log(`session start: ${starts.map(fmt).join(' ')} ms`);

  // 2 and 3. list with 1 and 10 sessions; memory of an idle daemon.
  const lists = {};
  const mem = { daemon: [], chromium: [] };
  for (let i = 0; i < 10; i++) {
    const r = await run(
      ['session', 'start', url, '--browser-session', `l${i}`, '--connection-id', connectionId],
      cliEnv,
    );
    if (i === 0) {
      await new Promise((r2) => setTimeout(r2, 2000)); // idle
      mem.daemon.push(rssKb(r.json.pid));
      mem.chromium.push(processTree(r.json.pid).reduce((a, p) => a + rssKb(p), 0));
    }
    if (i === 0 || i === 9) {
      const xs = [];
      for (let k = 0; k < LIST_RUNS; k++) xs.push((await run(['session', 'list'], cliEnv)).ms);
      lists[i + 1] = xs;
    }
  }
  const startMedian = median(starts);
  const data = {
    sessionStartMs: { median: startMedian, samples: starts },
    sessionListMs: {
      1: { median: median(lists[1]), samples: lists[1] },
      10: { median: median(lists[10]), samples: lists[10] },
    },
    idleRssMb: { daemon: mem.daemon[0] / 1024, chromium: mem.chromium[0] / 1024 },
  };
  return {
    tables: [
      {
        title: 'CLI wall time (a fresh `aluvia` process each run)',
        head: ['case', 'median ms', 'min ms', 'max ms', 'runs'],
        rows: [
          [
            'session start <local page>',
            fmt(startMedian),
            fmt(Math.min(...starts)),
            fmt(Math.max(...starts)),
            starts.length,
          ],
          ...[1, 10].map((n) => [
            `session list (${n} running)`,
            fmt(median(lists[n])),
            fmt(Math.min(...lists[n])),
            fmt(Math.max(...lists[n])),
            lists[n].length,
          ]),
        ],
      },
      {
        title: 'Idle session memory (RSS, 2 s after start)',
        head: ['process', 'MB'],
        rows: [
          ['the session daemon (aluvia-daemon, or Node where it is not built)', data.idleRssMb.daemon.toFixed(1)],
          ['its Chromium processes (sum)', data.idleRssMb.chromium.toFixed(1)],
        ],
      },
    ],
    checks: [
      {
        key: 'sessionStartMedianMs',
        label: 'session start median (local page)',
        value: startMedian,
        display: `${fmt(startMedian)} ms`,
        target: '< 700 ms',
        met: startMedian < 700,
      },
    ],
    notes: ['Chromium RSS sums shared pages of its processes, so it overstates their real footprint.'],
    data,
  };
}

export { run_ as run };
