// Native load tools for the proxy bench: wrk (keep-alive GETs) and curl (the
// tunnel download). They cost far less CPU per request than any Node client,
// so on a machine with few cores the figures show the proxies rather than the
// load generator. `npm run bench` installs them where it can (scripts/setup.mjs).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { benchDir } from './resources.mjs';

export const hasCommand = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Run `cmd args`, registered with `res` so an abort kills it; resolves with stdout. */
function run(res, cmd, args, env, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const kill = () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL');
    const unregister = res.defer(cmd, kill);
    const timer = setTimeout(kill, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      unregister();
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} → ${code ?? signal}: ${err.trim() || out.trim()}`));
    });
  });
}

/**
 * One wrk run of `seconds` s: one thread, `concurrency` keep-alive
 * connections, GET /x from 127.0.0.1:`targetPort`, directly or through the
 * proxy on `proxyPort`. Returns the same fields as loadgen.mjs.
 */
export async function wrk(res, { targetPort, proxyPort, concurrency, seconds }) {
  const target = `127.0.0.1:${targetPort}`;
  const url = proxyPort ? `http://127.0.0.1:${proxyPort}/` : `http://${target}/x`;
  const args = [
    '-t1',
    `-c${concurrency}`,
    `-d${seconds}s`,
    '--timeout',
    '5s',
    '-s',
    join(benchDir, 'lib', 'wrk-get.lua'),
    url,
  ];
  const out = await run(res, 'wrk', args, { BENCH_TARGET: proxyPort ? target : '' }, (seconds + 15) * 1000);
  const line = out.trim().split('\n').pop();
  const r = JSON.parse(line);
  const secs = r.durationUs / 1e6;
  return {
    requests: r.requests,
    errors: r.errors,
    rps: r.requests / secs,
    p50Ms: r.p50Us / 1000,
    p90Ms: r.p90Us / 1000,
    p99Ms: r.p99Us / 1000,
    meanMs: r.meanUs / 1000,
    maxMs: r.maxUs / 1000,
    bytesPerRequest: r.requests ? r.bytes / r.requests : 0,
  };
}

/**
 * Download http://127.0.0.1:`targetPort`/big with curl, directly or through
 * the proxy's CONNECT tunnel (`-p`), body to /dev/null. MB/s over the whole
 * transfer, connect and CONNECT handshake included.
 */
export async function curlDownload(res, { targetPort, proxyPort, expectBodyBytes, cpu = null }) {
  const args = ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}'];
  if (proxyPort) args.push('-p', '-x', `http://127.0.0.1:${proxyPort}`);
  args.push(`http://127.0.0.1:${targetPort}/big`);
  const [cmd, argv] = cpu == null ? ['curl', args] : ['taskset', ['-c', String(cpu), 'curl', ...args]];
  const [code, size, secs] = (await run(res, cmd, argv, {}, 60_000)).trim().split(' ');
  if (code !== '200' || Number(size) !== expectBodyBytes) {
    throw new Error(`curl via ${proxyPort ?? 'direct'}: HTTP ${code}, ${size} bytes (expected ${expectBodyBytes})`);
  }
  return { bodyBytes: Number(size), ms: Number(secs) * 1000, mbPerS: Number(size) / 1e6 / Number(secs) };
}

/** Restrict every thread of process `pid` to `cpus` (taskset's list syntax, e.g. "0" or "0-1"). */
export function pin(pid, cpus) {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`taskset -a -p -c ${cpus} ${pid}: ${String(r.stderr).trim()}`);
}

/** The CPUs process `pid` may run on (taskset's list, e.g. "0,1" or "2-3"), as numbers; [] without taskset. */
export function allowedCpus(pid = process.pid) {
  const r = spawnSync('taskset', ['-c', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const list = r.status === 0 ? r.stdout.split(':').pop().trim() : '';
  return list
    ? list.split(',').flatMap((part) => {
        const [a, b = a] = part.split('-').map(Number);
        return Array.from({ length: b - a + 1 }, (_, i) => a + i);
      })
    : [];
}

/** Pids of every process under `pid` (not including it). */
export function processTree(pid) {
  const rows = execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/).map(Number));
  const out = [];
  const walk = (p) => {
    for (const [c, pp] of rows) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}
