// Section "scale": many background sessions at once, through the CLI.
//
// For each browser kind (chromium, headless-shell), in a private TMPDIR
// against the emulator, with one loopback page:
//   1. Baseline: one session alone (`aluvia session start`), its start time
//      and, after it has been idle, the memory of its daemon (the pid that
//      `session start` prints) alone and of the daemon with every process
//      under it (PSS from /proc/<pid>/smaps_rollup, so shared pages are
//      counted once across all sessions).
//   2. N sessions (BENCH_SESSIONS, default 15 per core) started at once, each
//      by its own `aluvia session start`: all ready (each printed its JSON and
//      `session list` shows them all), the time until the last was ready, the
//      p50/p95 of one start, and the memory of all of them, idle.
//   3. `aluvia session close --all`, then what is left: processes of the
//      sessions, Chromium profiles, other temp folders, lock files.
// Ratios are against the baseline of the same run.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveLoopback } from './lib/loopback.mjs';
import {
  aluvia,
  aluviaEnv,
  browserKinds,
  browserSeen,
  fmt,
  median,
  mib,
  nodeStartNote,
  ok,
  percentile,
  processesMentioning,
  sessionMemory,
  settle,
  sleep,
  stillRunning,
  tmpLeftovers,
} from './lib/sessions.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');

export const name = 'scale';
export const title = 'Many sessions at once through the CLI: time to all ready, memory, nothing left after close --all';

const N = process.env.BENCH_SESSIONS ? Number(process.env.BENCH_SESSIONS) : 15 * cpus().length;
const IDLE_MS = process.env.BENCH_IDLE_MS ? Number(process.env.BENCH_IDLE_MS) : 3000;
const BASE_RUNS = 3;
const START_TIMEOUT_MS = 180_000;
const GIB24_KIB = 24 * 1024 * 1024;

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Scale</title></head><body>
<h1>An ordinary page</h1>${'<p>Plain text of an ordinary page, nothing on it looks like a block.</p>'.repeat(12)}
</body></html>`;

async function runKind({ res, log, emu, url, kind }) {
  const tmp = mkdtempSync(join(tmpdir(), 'abench-scale-'));
  const env = aluviaEnv(emu, tmp, kind);
  const closeAll = () => aluvia(res, ['session', 'close', '--all'], env, { timeoutMs: 60_000 });
  const cleanup = res.defer(`scale ${kind.kind}: sessions and ${tmp}`, async () => {
    await closeAll().catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
  });
  const r = { kind: kind.kind, tmp };
  try {
    // 1. Baseline: one session alone (a warm-up start, idle memory, then BASE_RUNS timed starts).
    log(`${kind.kind}: one session alone`);
    const first = ok(await aluvia(res, ['session', 'start', url, '--browser-session', 'base'], env), 'session start');
    const connectionId = String(first.json.connectionId);
    await sleep(IDLE_MS);
    const alone = sessionMemory(first.json.pid);
    ok(await aluvia(res, ['session', 'close', '--browser-session', 'base'], env), 'session close');
    await settle(() => stillRunning(alone.procs));
    const baseStarts = [];
    for (let i = 0; i < BASE_RUNS; i++) {
      const one = ok(
        await aluvia(
          res,
          ['session', 'start', url, '--browser-session', `base${i}`, '--connection-id', connectionId],
          env,
        ),
        'session start',
      );
      baseStarts.push(one.ms);
      ok(await aluvia(res, ['session', 'close', '--browser-session', `base${i}`], env), 'session close');
    }
    r.alone = { startMs: median(baseStarts), coldStartMs: first.ms, ...alone, browser: browserSeen(alone.exes) };
    await settle(() => processesMentioning(tmp));

    // 2. N at once.
    log(`${kind.kind}: ${N} sessions at once`);
    const t0 = performance.now();
    const starts = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        aluvia(
          res,
          ['session', 'start', url, '--browser-session', `scale-${i}`, '--connection-id', connectionId],
          env,
          {
            timeoutMs: START_TIMEOUT_MS,
          },
        ).then((x) => ({ ...x, doneAt: performance.now() - t0 })),
      ),
    );
    const ready = starts.filter((s) => s.code === 0 && s.json?.pid);
    const failed = starts.filter((s) => !(s.code === 0 && s.json?.pid));
    for (const f of failed.slice(0, 3))
      log(`${kind.kind}: a start failed (${f.code}): ${(f.err || f.out).slice(-300)}`);
    const list = ok(await aluvia(res, ['session', 'list'], env), 'session list');
    const listed = Array.isArray(list.json?.sessions) ? list.json.sessions.length : Number.NaN;
    r.n = N;
    r.ready = ready.length;
    r.listed = listed;
    r.allReadyMs = Math.max(...starts.map((s) => s.doneAt));
    r.startMs = ready.map((s) => s.ms);
    await sleep(IDLE_MS);
    const mems = ready.map((s) => sessionMemory(s.json.pid));
    r.totalPssKiB = mems.reduce((a, m) => a + m.treePssKiB, 0);
    r.perSessionPssKiB = r.totalPssKiB / Math.max(1, mems.length);
    r.perSessionUssKiB = mems.reduce((a, m) => a + m.treeUssKiB, 0) / Math.max(1, mems.length);
    r.daemonPssKiB = median(mems.map((m) => m.daemonPssKiB));
    r.daemonRssKiB = median(mems.map((m) => m.daemonRssKiB));
    r.processes = mems.reduce((a, m) => a + m.processes, 0);
    r.browsers = [...new Set(mems.map((m) => browserSeen(m.exes)))].join(',');

    // 3. close --all, and what is left.
    log(`${kind.kind}: session close --all`);
    const close = await closeAll();
    r.closeAllMs = close.ms;
    r.closeAllCode = close.code;
    const procs = mems.flatMap((m) => m.procs);
    r.leftProcs = await settle(() => [
      ...stillRunning(procs).map((p) => ({ pid: p.pid, cmd: 'a process of a session' })),
      ...processesMentioning(tmp).filter((p) => !procs.some((q) => q.pid === p.pid)),
    ]);
    r.left = tmpLeftovers(tmp);
    const after = await aluvia(res, ['session', 'list'], env);
    r.listedAfter = Array.isArray(after.json?.sessions) ? after.json.sessions.length : Number.NaN;
  } finally {
    await cleanup();
  }
  r.tmpRemoved = !existsSync(tmp);
  r.nothingLeft =
    r.closeAllCode === 0 &&
    r.leftProcs.length === 0 &&
    r.left.profiles.length + r.left.temp.length + r.left.locks.length === 0 &&
    r.listedAfter === 0 &&
    r.tmpRemoved;
  return r;
}

export async function run({ res, log }) {
  const url = `${await serveLoopback(res, 'page server', (_req, resp) => {
    resp.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    resp.end(PAGE);
  })}/`;
  const emu = await sdk.startEmulator({ site: false });
  res.defer('emulator', () => emu.stop());

  const kinds = browserKinds();
  const results = [];
  const skipped = [];
  for (const kind of kinds) {
    if (kind.missing) {
      skipped.push(`${kind.kind}: skipped, ${kind.missing}`);
      continue;
    }
    results.push(await runKind({ res, log, emu, url, kind }));
  }

  const col = (f) => results.map(f);
  const head = ['measure', ...results.map((r) => r.kind)];
  const rows = [
    ['sessions started at once', ...col((r) => r.n)],
    ['ready (printed JSON)', ...col((r) => r.ready)],
    ['listed by session list', ...col((r) => r.listed)],
    ['browser seen in the process tree', ...col((r) => r.browsers)],
    ['time until all ready, ms', ...col((r) => fmt(r.allReadyMs))],
    ['one start at once, p50 ms', ...col((r) => fmt(median(r.startMs)))],
    ['one start at once, p95 ms', ...col((r) => fmt(percentile(r.startMs, 95)))],
    [`baseline: one start alone, median of ${BASE_RUNS} ms`, ...col((r) => fmt(r.alone.startMs))],
    ['p50 at once / alone', ...col((r) => fmt(median(r.startMs) / r.alone.startMs, 2))],
    ['total PSS of all sessions, MiB', ...col((r) => fmt(mib(r.totalPssKiB)))],
    ['PSS per session at once, MiB', ...col((r) => fmt(mib(r.perSessionPssKiB), 1))],
    ['baseline: PSS of one session alone, MiB', ...col((r) => fmt(mib(r.alone.treePssKiB), 1))],
    ['per session at once / alone', ...col((r) => fmt(r.perSessionPssKiB / r.alone.treePssKiB, 2))],
    ['USS per session at once (private pages), MiB', ...col((r) => fmt(mib(r.perSessionUssKiB), 1))],
    ['baseline: USS of one session alone, MiB', ...col((r) => fmt(mib(r.alone.treeUssKiB), 1))],
    ['sessions in 24 GiB (at the per-session PSS)', ...col((r) => fmt(Math.floor(GIB24_KIB / r.perSessionPssKiB)))],
    ['processes per session', ...col((r) => fmt(r.processes / Math.max(1, r.ready), 1))],
    ['daemon alone: RSS MiB (one session)', ...col((r) => fmt(mib(r.alone.daemonRssKiB), 1))],
    ['daemon alone: PSS MiB (one session)', ...col((r) => fmt(mib(r.alone.daemonPssKiB), 1))],
    ['daemon: PSS MiB, median at once', ...col((r) => fmt(mib(r.daemonPssKiB), 1))],
    ['session close --all, ms', ...col((r) => fmt(r.closeAllMs))],
    ['left after close --all: processes', ...col((r) => r.leftProcs.length)],
    ['left: aluvia-chromium-* profiles', ...col((r) => r.left.profiles.length)],
    ['left: other temp entries', ...col((r) => r.left.temp.length)],
    ['left: lock files', ...col((r) => r.left.locks.length)],
    ['sessions listed after close --all', ...col((r) => r.listedAfter)],
    ['private TMPDIR removed', ...col((r) => (r.tmpRemoved ? 'yes' : 'no'))],
  ];

  const checks = [];
  for (const r of results) {
    checks.push({
      key: `allReady.${r.kind}`,
      label: `${r.kind}: ${r.n} sessions at once all ready`,
      value: r.ready,
      display: `${r.ready}/${r.n} ready, ${r.listed} listed, all in ${fmt(r.allReadyMs)} ms`,
      target: `${r.n}/${r.n}`,
      met: r.ready === r.n && r.listed === r.n,
    });
    const leftText = [
      r.leftProcs.length && `${r.leftProcs.length} processes`,
      r.left.profiles.length && `${r.left.profiles.length} profiles`,
      r.left.temp.length && `temp: ${r.left.temp.join(' ')}`,
      r.left.locks.length && `locks: ${r.left.locks.join(' ')}`,
      r.listedAfter !== 0 && `${r.listedAfter} still listed`,
      !r.tmpRemoved && 'TMPDIR not removed',
      r.closeAllCode !== 0 && `close --all exited ${r.closeAllCode}`,
    ].filter(Boolean);
    checks.push({
      key: `nothingLeft.${r.kind}`,
      label: `${r.kind}: nothing left after close --all`,
      value: r.nothingLeft,
      display: leftText.length ? leftText.join('; ') : 'nothing left',
      target: 'no process, profile, temp folder or lock',
      met: r.nothingLeft,
    });
    checks.push({
      key: `daemonRss.${r.kind}`,
      label: `${r.kind}: daemon RSS (one session, idle)`,
      value: mib(r.alone.daemonRssKiB),
      display: `${fmt(mib(r.alone.daemonRssKiB), 1)} MiB`,
      target: '≤ 15 MiB',
      met: mib(r.alone.daemonRssKiB) <= 15,
    });
    checks.push({
      key: `daemonPss.${r.kind}`,
      label: `${r.kind}: daemon PSS (one session, idle)`,
      value: mib(r.alone.daemonPssKiB),
      display: `${fmt(mib(r.alone.daemonPssKiB), 1)} MiB`,
      target: '≤ 10 MiB',
      met: mib(r.alone.daemonPssKiB) <= 10,
    });
    if (r.kind === 'headless-shell') {
      checks.push({
        key: 'sessionPss.headless-shell',
        label: 'headless-shell: PSS of one idle session (daemon and all under it)',
        value: mib(r.alone.treePssKiB),
        display: `${fmt(mib(r.alone.treePssKiB), 1)} MiB (${fmt(mib(r.perSessionPssKiB), 1)} per session with ${r.ready} at once)`,
        target: '≤ 200 MiB',
        met: mib(r.alone.treePssKiB) <= 200,
      });
    }
  }

  const fits = results.map((r) => `${r.kind} ${fmt(Math.floor(GIB24_KIB / r.perSessionPssKiB))}`).join(', ');
  return {
    tables: results.length
      ? [
          {
            title: `${N} sessions started at once (${cpus().length} CPUs), idle ${IDLE_MS} ms before memory`,
            head,
            rows,
          },
        ]
      : [],
    checks,
    notes: [
      ...skipped,
      `Sessions that fit in 24 GiB at the per-session PSS measured with ${N} at once: ${fits || 'n/a'} (browser and daemon memory only; the machine's own use and page content come on top).`,
      "PSS is summed over each daemon (the pid `session start` prints) and every process under it; pages shared between processes and sessions are counted once (and split with any other process mapping them, another user's Chromium included). USS counts only the pages no other process maps, a lower bound that falls as more sessions share pages. The daemon alone is the same pid without its descendants.",
      `Every start is its own \`aluvia session start\` process (Node start, name claim, daemon spawn, proxy, Chromium, first navigation); all sessions share one emulator connection (--connection-id) and one loopback page. The baseline is one session alone in the same run: its memory after a warm-up start, its start time the median of ${BASE_RUNS} starts after that.`,
      nodeStartNote(),
      'Chromium runs in the default isolation (network namespace where available); the lock logs (cli-*.log) stay by design and are not counted as left over.',
    ],
    data: results.map(({ alone, leftProcs, tmp, ...r }) => ({
      ...r,
      alone: { ...alone, procs: undefined, exes: undefined },
      leftProcs,
    })),
  };
}
