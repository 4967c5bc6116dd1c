// Helpers for the sections that run background sessions through a CLI
// (`scale`, `cli-peers`): timed CLI runs, the browser kinds, per-process
// memory (PSS from /proc/<pid>/smaps_rollup), and what a run left behind.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir } from './resources.mjs';
import { processTree } from './native.mjs';

export const aluviaCli = join(benchDir, '..', 'bin', 'aluvia.js');

/**
 * The two browser kinds, on the system's binaries. The headless-shell kind is
 * selected both ways the engine may understand (`ALUVIA_BROWSER`, newer, and
 * `ALUVIA_CHROMIUM_PATH`); the chromium kind names its binary too, so that
 * every tool runs the same executable.
 */
export const BROWSER_KINDS = [
  { kind: 'chromium', executable: '/usr/bin/chromium', env: { ALUVIA_CHROMIUM_PATH: '/usr/bin/chromium' } },
  {
    kind: 'headless-shell',
    executable: '/usr/lib/chromium/chromium-headless-shell',
    env: { ALUVIA_BROWSER: 'headless-shell', ALUVIA_CHROMIUM_PATH: '/usr/lib/chromium/chromium-headless-shell' },
  },
];

/** The kinds named in BENCH_BROWSERS (comma-separated), else both; those whose binary is missing are left out. */
export function browserKinds() {
  const wanted = process.env.BENCH_BROWSERS ? new Set(process.env.BENCH_BROWSERS.split(',')) : null;
  return BROWSER_KINDS.filter((k) => !wanted || wanted.has(k.kind)).map((k) => ({
    ...k,
    missing: existsSync(k.executable) ? null : `${k.executable} not found`,
  }));
}

/** Said next to every CLI timing: Node pays for this on each start. */
export function nodeStartNote() {
  return process.env.NODE_EXTRA_CA_CERTS
    ? `NODE_EXTRA_CA_CERTS is set on this machine (${process.env.NODE_EXTRA_CA_CERTS}): every Node process (each \`aluvia\` run, each session daemon) loads those certificates at start, about 50 ms here; the figures include it.`
    : 'NODE_EXTRA_CA_CERTS is not set here.';
}

/**
 * Run `cmd args` with `env`; resolves { ms, code, out, err, json } (json: the
 * parsed stdout, or null). Killed (SIGKILL) past `timeoutMs` or when `res`
 * closes. Never rejects on a non-zero exit: the caller decides.
 */
export function timed(res, cmd, args, env, { timeoutMs = 60_000, label = cmd } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const kill = () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL');
    const unregister = res.defer(label, kill);
    const timer = setTimeout(kill, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      unregister();
      reject(e);
    });
    child.on('close', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      unregister();
      let json = null;
      try {
        json = JSON.parse(out);
      } catch {}
      resolve({ ms, code: code ?? signal, out: out.trim(), err: err.trim(), json });
    });
  });
}

/** `aluvia <args>` in a fresh Node process, timed. */
export const aluvia = (res, args, env, opts = {}) =>
  timed(res, process.execPath, [aluviaCli, ...args], env, { label: `aluvia ${args.slice(0, 2).join(' ')}`, ...opts });

/** Throws unless the run exited 0. */
export function ok(r, what) {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${(r.err || r.out).slice(-500)}`);
  return r;
}

/** The environment of the `aluvia` CLI against emulator `emu`, with a private TMPDIR and a browser kind. */
export function aluviaEnv(emu, tmp, kind) {
  const env = {
    ...process.env,
    TMPDIR: tmp,
    ALUVIA_API_KEY: emu.apiKey,
    ALUVIA_API_BASE_URL: emu.apiBaseUrl,
    ALUVIA_GATEWAY_HOST: emu.gatewayHost,
    ALUVIA_GATEWAY_PORT: String(emu.gatewayPort),
    ...kind.env,
  };
  if (!kind.env.ALUVIA_BROWSER) delete env.ALUVIA_BROWSER;
  return env;
}

function statusKiB(pid, field) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** PSS and USS (private pages only) of `pid` in KiB, from smaps_rollup (0 when it is gone, a zombie or unreadable). */
export function memKiB(pid) {
  let text = '';
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {}
  const field = (f) => Number(text.match(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
  return { pss: field('Pss'), uss: field('Private_Clean') + field('Private_Dirty') };
}

export const pssKiB = (pid) => memKiB(pid).pss;

export const rssKiB = (pid) => statusKiB(pid, 'VmRSS');

/** Start time of `pid` (clock ticks since boot, field 22 of /proc/<pid>/stat) and its state; null when gone. */
export function procStart(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], start: f[19] };
  } catch {
    return null;
  }
}

function exeName(pid) {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/)[0];
    } catch {
      return '';
    }
  }
}

/**
 * Memory of one session: its daemon `pid` alone (RSS and PSS) and the daemon
 * with all its descendants (PSS and USS summed, process count), the executables seen
 * in the tree, and every pid with its start time (to check later that they
 * are gone).
 */
export function sessionMemory(pid) {
  const pids = [pid, ...processTree(pid)];
  const exes = new Set();
  const procs = [];
  let treePss = 0;
  let treeUss = 0;
  for (const p of pids) {
    const st = procStart(p);
    if (!st || st.state === 'Z') continue;
    const m = memKiB(p);
    treePss += m.pss;
    treeUss += m.uss;
    procs.push({ pid: p, start: st.start });
    if (p !== pid) exes.add(exeName(p));
  }
  return {
    daemonRssKiB: rssKiB(pid),
    daemonPssKiB: pssKiB(pid),
    treePssKiB: treePss,
    treeUssKiB: treeUss,
    processes: procs.length,
    exes: [...exes].filter(Boolean),
    procs,
  };
}

/** Which browser the tree ran: 'headless-shell', 'chromium', or the executables seen. */
export function browserSeen(exes) {
  if (exes.some((e) => e.endsWith('chromium-headless-shell'))) return 'headless-shell';
  if (exes.some((e) => /\/chromium$|\/chrome$/.test(e))) return 'chromium';
  return exes.map((e) => e.split('/').pop()).join(',') || 'none';
}

/** Live (not zombie) processes among `procs` ({pid, start}) that are still the same process. */
export function stillRunning(procs) {
  return procs.filter(({ pid, start }) => {
    const st = procStart(pid);
    return st && st.state !== 'Z' && st.start === start;
  });
}

/** Live processes (not zombies) whose command line or environment mentions `path`. */
export function processesMentioning(path) {
  const found = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const st = procStart(name);
      if (!st || st.state === 'Z') continue;
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      const env = readFileSync(`/proc/${name}/environ`, 'utf8');
      if (cmd.includes(path) || env.includes(path))
        found.push({ pid: Number(name), cmd: cmd.split('\0').join(' ').slice(0, 120) });
    } catch {}
  }
  return found;
}

/** Poll `fn` until it returns a falsy/empty value or `ms` pass; returns its last value. */
export async function settle(fn, ms = 5000, every = 100) {
  const end = Date.now() + ms;
  let v = fn();
  while ((Array.isArray(v) ? v.length : v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, every));
    v = fn();
  }
  return v;
}

/**
 * What the aluvia sessions left in their private TMPDIR `tmp`: Chromium
 * profiles (`aluvia-chromium-*`), other temp entries (a `--run` folder,
 * Chromium's own temp files), and lock files (`cli-*.lock` and atomic-write
 * temp files) in the lock directory. Logs (`cli-*.log`) and the directory's
 * own `.dir.lock` stay by design and are not counted.
 */
export function tmpLeftovers(tmp) {
  const out = { profiles: [], temp: [], locks: [] };
  if (!existsSync(tmp)) return out;
  for (const e of readdirSync(tmp)) {
    if (e.startsWith('aluvia-chromium-')) out.profiles.push(e);
    else if (e === 'aluvia-sdk' || /^aluvia-sdk-\d+$/.test(e)) {
      for (const f of readdirSync(join(tmp, e))) {
        if (f === '.dir.lock' || /^cli-.*\.log$/.test(f)) continue;
        out.locks.push(`${e}/${f}`);
      }
    } else out.temp.push(e);
  }
  return out;
}

export const median = (xs) => {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Nearest-rank percentile (p in 0..100). */
export const percentile = (xs, p) => {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

export const mib = (kib) => kib / 1024;
export const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
