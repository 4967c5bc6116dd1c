#!/usr/bin/env node
// Benchmarks of @aluvia/sdk. `npm run bench` builds the engine in release mode
// first; `node benches/run.mjs` runs against whatever engine is built.
//
// Each section is a module exporting `name`, `title` and `async run({ res, log })`
// that returns { tables: [{ title, head, rows }], checks: [{ key, label, value,
// display, target, met }], notes: [string], data: {...} }. Everything a section
// starts must be registered with `res.defer(label, closeFn)` (or started with
// startChild from ./lib/resources.mjs): it is stopped when the section ends,
// fails, or the bench is interrupted. Add a section by appending it to SECTIONS.
//
//   BENCH_ONLY=proxy               run only these sections (comma-separated)
//   BENCH_DURATION_MS, BENCH_WARMUP_MS, BENCH_CONCURRENCY=1,32,
//   BENCH_ROUNDS, BENCH_TUNNEL_TRIALS, BENCH_TUNNEL_BYTES   (proxy section knobs)
//   BENCH_DETECTION_ROUNDS, BENCH_SDK                      (detection section knobs)
//   BENCH_LADDER_ROUNDS                                    (ladder section knob)
//   BENCH_SESSIONS (default 15 per CPU), BENCH_PEERS_ROUNDS  (scale, cli-peers section knobs)
//   BENCH_BROWSERS=chromium,headless-shell, BENCH_IDLE_MS     (both)
//   BENCH_BUDGET_MS                 abort (with cleanup) past this total time
import { Resources, benchDir } from './lib/resources.mjs';
import { table, environment } from './lib/report.mjs';
import { join } from 'node:path';

const SECTIONS = [
  () => import('./proxy.mjs'),
  () => import('./routes.mjs'),
  () => import('./browser.mjs'),
  () => import('./isolation.mjs'),
  () => import('./detection.mjs'),
  () => import('./ladder.mjs'),
  () => import('./cli.mjs'),
  () => import('./scale.mjs'),
  () => import('./peers.mjs'),
];

const root = join(benchDir, '..');
const TOTAL_BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 15 * 60_000);
const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);
const out = (s = '') => process.stdout.write(`${s}\n`);

let current = null; // the running section's Resources
let exiting = false;

async function abort(reason, code) {
  if (exiting) return;
  exiting = true;
  log(`${reason}: stopping everything the bench started`);
  const errs = current ? await current.closeAll() : [];
  for (const e of errs) log(`cleanup: ${e}`);
  process.exit(code);
}
process.on('SIGINT', () => abort('interrupted', 130));
process.on('SIGTERM', () => abort('terminated', 143));
const budget = setTimeout(() => abort(`over the ${TOTAL_BUDGET_MS / 1000} s budget`, 1), TOTAL_BUDGET_MS);
budget.unref();

const t0 = Date.now();
const env = environment(root);
out(
  `@aluvia/sdk benchmarks — node ${env.node}, ${env.platform}, ${env.cpus} CPU(s) (${env.cpuModel}), load average ${env.loadavg.join(' ')}`,
);
out(`engine: ${env.engine.build} build${env.engine.mtime ? ` (built ${env.engine.mtime})` : ''}`);
if (env.engine.build !== 'release')
  out('WARNING: the engine in place is not the release build; run `npm run bench` (it builds with --release).');

const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : null;
const summary = { env, sections: {}, checks: {}, failed: [] };
let exitCode = 0;

for (const load of SECTIONS) {
  const mod = await load();
  if (only && !only.has(mod.name)) continue;
  out('');
  out(`== ${mod.title ?? mod.name} ==`);
  const res = new Resources();
  current = res;
  const started = Date.now();
  let result;
  try {
    result = await mod.run({ res, log });
  } catch (err) {
    if (exiting) await new Promise(() => {}); // interrupted: abort() finishes the cleanup and exits
    exitCode = 1;
    summary.failed.push({ section: mod.name, error: String(err?.message ?? err) });
    out(`FAILED: ${err?.stack ?? err}`);
  } finally {
    const errs = await res.closeAll();
    for (const e of errs) log(`cleanup (${mod.name}): ${e}`);
    current = null;
  }
  if (!result) continue;
  for (const t of result.tables ?? []) {
    out('');
    out(table(t));
  }
  if (result.checks?.length) {
    out('');
    out(
      table({
        title: 'Targets',
        head: ['check', 'measured', 'target', 'result'],
        rows: result.checks.map((c) => [c.label, c.display, c.target, c.met ? 'MET' : 'NOT MET']),
      }),
    );
  }
  if (result.notes?.length) {
    out('');
    for (const n of result.notes) out(`note: ${n}`);
  }
  out(`(section took ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  summary.sections[mod.name] = result.data ?? {};
  for (const c of result.checks ?? []) {
    summary.checks[`${mod.name}.${c.key}`] = { value: c.value, target: c.target, met: c.met };
  }
}

summary.env.loadavgEnd = (await import('node:os')).loadavg().map((x) => Number(x.toFixed(2)));
summary.totalSeconds = Number(((Date.now() - t0) / 1000).toFixed(1));
summary.allTargetsMet = Object.values(summary.checks).every((c) => c.met) && summary.failed.length === 0;
out('');
out(
  `total ${summary.totalSeconds} s; targets: ${Object.values(summary.checks).filter((c) => c.met).length}/${Object.keys(summary.checks).length} met; load average at end ${summary.env.loadavgEnd.join(' ')}`,
);
out(JSON.stringify(summary));
clearTimeout(budget);
// The native engine may hold threads open after stop(); everything was closed above.
process.exit(exitCode);
