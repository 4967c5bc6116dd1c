// Fixtures for the CLI session tests: a private TMPDIR (so the real
// /tmp/aluvia-sdk is never touched), the CLI run against the emulator, lock
// files planted by hand, and the process table.
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, root, eventually } from './helpers.mjs';

export { eventually };

export class Sandbox {
  constructor(emu, tag) {
    this.emu = emu;
    this.tmp = mkdtempSync(join(tmpdir(), `aluvia-${tag}-`));
    this.env = {
      TMPDIR: this.tmp,
      ALUVIA_API_KEY: emu?.apiKey ?? 'unused',
      ALUVIA_API_BASE_URL: emu?.apiBaseUrl ?? '',
      ALUVIA_GATEWAY_HOST: emu?.gatewayHost ?? '',
      ALUVIA_GATEWAY_PORT: emu ? String(emu.gatewayPort) : '',
    };
  }

  get lockDir() {
    return join(this.tmp, 'aluvia-sdk');
  }

  lockPath(name) {
    return join(this.lockDir, `cli-${name}.lock`);
  }

  logPath(name) {
    return join(this.lockDir, `cli-${name}.log`);
  }

  /** Runs the CLI in this sandbox; resolves { code, stdout, stderr, json }. */
  cli(args, { env = {}, cwd = root } = {}) {
    return runCli(args, { env: { ...this.env, ...env }, cwd });
  }

  /** Writes a lock file by hand (the directory is created by any CLI call first). */
  plant(name, data) {
    writeFileSync(this.lockPath(name), typeof data === 'string' ? data : JSON.stringify(data), { mode: 0o600 });
  }

  readLock(name) {
    return existsSync(this.lockPath(name)) ? JSON.parse(readFileSync(this.lockPath(name), 'utf8')) : null;
  }

  log(name) {
    return existsSync(this.logPath(name)) ? readFileSync(this.logPath(name), 'utf8') : '';
  }

  locks() {
    return existsSync(this.lockDir)
      ? readdirSync(this.lockDir).filter((f) => f.startsWith('cli-') && f.endsWith('.lock'))
      : [];
  }

  /** Closes every session and removes the sandbox. */
  async dispose() {
    await this.cli(['session', 'close', '--all']).catch(() => {});
    if (!process.env.ALUVIA_TEST_KEEP) rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** `{ pid, ppid, args }` of every process. */
export function processes() {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/);
      return { pid: Number(m[1]), ppid: Number(m[2]), args: m[3] };
    });
}

/** Pids of the process tree under `pid` (not including it). */
export function descendants(pid) {
  const all = processes();
  const out = [];
  const walk = (p) => {
    for (const c of all.filter((x) => x.ppid === p)) {
      out.push(c.pid);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie counts as dead.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * What a lock of this version records of process `pid` beyond its pid
 * (`processStart`): on Linux the boot id and field 22 of its stat. A planted
 * lock needs it to name a live process (without it, only a session daemon's
 * command line counts).
 */
export function startOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}:${fields[19]}`;
}

/** A pid that is certainly not running. */
export function deadPid() {
  const child = spawn('true');
  const pid = child.pid;
  return new Promise((resolve) => child.on('exit', () => setTimeout(() => resolve(pid), 50)));
}

/** A loopback page server: `/` has title "Local Page", `/two` "Second Page". */
export function pageHandler(req, res) {
  const title = req.url.startsWith('/two') ? 'Second Page' : 'Local Page';
  res.setHeader('content-type', 'text/html');
  res.end(
    `<!doctype html><html><head><title>${title}</title></head><body><p>${'An ordinary page about gardening and travel. '.repeat(10)}</p></body></html>`,
  );
}
