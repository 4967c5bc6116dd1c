// Section "cli-peers": our CLI sessions side by side with agent-browser's,
// on the same Chromium binary and the same loopback page, in one run.
//
// For each browser kind (chromium, headless-shell), BENCH_PEERS_ROUNDS rounds
// (default 5) of alternating pairs (ours first in even rounds, theirs first in
// odd ones), each tool in its own private TMPDIR:
//   aluvia:        session start <url> --browser-session X / session list / session close --browser-session X
//   agent-browser: --session X open <url>                  / session list / --session X close
// Each start is timed until the CLI returns (both return once the page has
// loaded); after the session has been idle, the memory of its daemon alone
// and of the daemon with every process under it (PSS); close is timed until
// the CLI returns and until every process of the session is gone.
//
// agent-browser is installed on demand (`npm install --prefix benches/.peers
// agent-browser@<version>`, git-ignored; its npm package carries its Linux
// binary). If it cannot be installed or run, the section says why and skips.
import { createRequire } from 'node:module';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveLoopback } from './lib/loopback.mjs';
import { benchDir } from './lib/resources.mjs';
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
  processesMentioning,
  sessionMemory,
  settle,
  sleep,
  stillRunning,
  timed,
} from './lib/sessions.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');

export const name = 'cli-peers';
export const title = 'Side by side: aluvia CLI sessions vs agent-browser on the same Chromium binary';

const PEER_VERSION = '0.41.2';
const PEER_DIR = join(benchDir, '.peers');
const ROUNDS = process.env.BENCH_PEERS_ROUNDS ? Number(process.env.BENCH_PEERS_ROUNDS) : 5;
const IDLE_MS = process.env.BENCH_IDLE_MS ? Number(process.env.BENCH_IDLE_MS) : 3000;

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Peers</title></head><body>
<h1>An ordinary page</h1>${'<p>Plain text of an ordinary page, nothing on it looks like a block.</p>'.repeat(12)}
</body></html>`;

/** agent-browser's native binary for this system, installed on demand; { bin } or { skip: reason }. */
async function installPeer(res, log) {
  const os = platform();
  const cpu = { x64: 'x64', arm64: 'arm64' }[arch()];
  if (os !== 'linux' || !cpu) return { skip: `no agent-browser binary for ${os}-${arch()} in its npm package` };
  const pkg = join(PEER_DIR, 'node_modules', 'agent-browser');
  const bin = join(pkg, 'bin', `agent-browser-linux-${cpu}`);
  const installed = () => {
    try {
      return JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')).version === PEER_VERSION && existsSync(bin);
    } catch {
      return false;
    }
  };
  if (!installed()) {
    log(`installing agent-browser@${PEER_VERSION} into ${PEER_DIR}`);
    mkdirSync(PEER_DIR, { recursive: true });
    // --ignore-scripts: its postinstall would only fetch a binary the package already has.
    const r = await timed(
      res,
      'npm',
      ['install', '--prefix', PEER_DIR, `agent-browser@${PEER_VERSION}`, '--ignore-scripts', '--no-audit', '--no-fund'],
      process.env,
      { timeoutMs: 180_000, label: 'npm install agent-browser' },
    ).catch((e) => ({ code: e.message, err: '' }));
    if (r.code !== 0 || !installed())
      return {
        skip: `npm install agent-browser@${PEER_VERSION} failed (${r.code}): ${(r.err || r.out || '').slice(-300)}`,
      };
  }
  // Its npm wrapper (bin/agent-browser.js) makes the binary executable on first use; so do we.
  if ((statSync(bin).mode & 0o111) === 0) chmodSync(bin, 0o755);
  const v = await timed(res, bin, ['--version'], process.env, { timeoutMs: 10_000 }).catch((e) => ({
    code: e.message,
  }));
  if (v.code !== 0 || !v.out?.includes(PEER_VERSION))
    return { skip: `agent-browser --version did not run here (${v.code}): ${(v.err || v.out || '').slice(-300)}` };
  return { bin, version: v.out };
}

/** agent-browser's environment: a private HOME, TMPDIR and socket folder, the kind's executable, no proxy, no version check (it would fetch a page from the internet). */
function peerEnv(tmp, kind) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('AGENT_BROWSER_') || /^(https?|all|no)_proxy$/i.test(k) || k === 'XDG_RUNTIME_DIR') continue;
    env[k] = v;
  }
  for (const d of ['home', 'sock']) mkdirSync(join(tmp, d), { recursive: true });
  return {
    ...env,
    HOME: join(tmp, 'home'),
    TMPDIR: tmp,
    AGENT_BROWSER_SOCKET_DIR: join(tmp, 'sock'),
    AGENT_BROWSER_EXECUTABLE_PATH: kind.executable,
    AGENT_BROWSER_NO_VERSION_CHECK: '1',
  };
}

/** The two tools behind one interface: start → daemon pid, list, close. */
function tools({ res, url, emu, peer, kind, ourTmp, peerTmp }) {
  const ours = aluviaEnv(emu, ourTmp, kind);
  const theirs = peerEnv(peerTmp, kind);
  let connectionId = null;
  const ab = (args, what) =>
    timed(res, peer.bin, ['--json', ...args], theirs, { timeoutMs: 60_000, label: `agent-browser ${what}` });
  return {
    aluvia: {
      async start(s) {
        const args = ['session', 'start', url, '--browser-session', s];
        if (connectionId) args.push('--connection-id', connectionId);
        const r = ok(await aluvia(res, args, ours), 'aluvia session start');
        connectionId ??= String(r.json.connectionId);
        return { ms: r.ms, pid: r.json.pid };
      },
      list: async () => ok(await aluvia(res, ['session', 'list'], ours), 'aluvia session list').ms,
      close: async (s) =>
        ok(await aluvia(res, ['session', 'close', '--browser-session', s], ours), 'aluvia session close').ms,
      closeAll: () => aluvia(res, ['session', 'close', '--all'], ours, { timeoutMs: 60_000 }),
      tmp: ourTmp,
    },
    'agent-browser': {
      async start(s) {
        const r = ok(await ab(['--session', s, 'open', url], 'open'), 'agent-browser open');
        if (r.json?.success !== true) throw new Error(`agent-browser open: ${r.out.slice(-300)}`);
        const pid = Number(readFileSync(join(theirs.AGENT_BROWSER_SOCKET_DIR, `${s}.pid`), 'utf8').trim());
        return { ms: r.ms, pid };
      },
      list: async () => ok(await ab(['session', 'list'], 'session list'), 'agent-browser session list').ms,
      close: async (s) => ok(await ab(['--session', s, 'close'], 'close'), 'agent-browser close').ms,
      closeAll: () => ab(['close', '--all'], 'close --all'),
      tmp: peerTmp,
    },
  };
}

const TOOLS = ['aluvia', 'agent-browser'];

async function runKind({ res, log, url, emu, peer, kind }) {
  const ourTmp = mkdtempSync(join(tmpdir(), 'abench-peers-'));
  const peerTmp = mkdtempSync(join(tmpdir(), 'abench-ab-'));
  const t = tools({ res, url, emu, peer, kind, ourTmp, peerTmp });
  const cleanup = res.defer(`cli-peers ${kind.kind}: sessions and temp folders`, async () => {
    for (const tool of TOOLS) {
      await t[tool].closeAll().catch(() => {});
      // Anything still running from this run's private folders (only ours mention them).
      await settle(() => processesMentioning(t[tool].tmp), 3000);
      for (const p of processesMentioning(t[tool].tmp)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {}
      }
    }
    rmSync(ourTmp, { recursive: true, force: true });
    rmSync(peerTmp, { recursive: true, force: true });
  });
  const data = Object.fromEntries(
    TOOLS.map((tool) => [
      tool,
      {
        startMs: [],
        listMs: [],
        closeMs: [],
        goneMs: [],
        pssKiB: [],
        ussKiB: [],
        daemonPssKiB: [],
        daemonRssKiB: [],
        processes: [],
        browser: new Set(),
      },
    ]),
  );
  let left = [];
  try {
    const once = async (tool, s, record) => {
      const d = data[tool];
      const st = await t[tool].start(s);
      await sleep(IDLE_MS);
      const mem = sessionMemory(st.pid);
      const listMs = await t[tool].list();
      const t0 = performance.now();
      const closeMs = await t[tool].close(s);
      const stuck = await settle(() => stillRunning(mem.procs), 15_000, 20);
      const goneMs = performance.now() - t0;
      if (stuck.length)
        throw new Error(`${tool}: ${stuck.length} processes of session ${s} still running 15 s after close`);
      if (!record) return;
      d.startMs.push(st.ms);
      d.listMs.push(listMs);
      d.closeMs.push(closeMs);
      d.goneMs.push(goneMs);
      d.pssKiB.push(mem.treePssKiB);
      d.ussKiB.push(mem.treeUssKiB);
      d.daemonPssKiB.push(mem.daemonPssKiB);
      d.daemonRssKiB.push(mem.daemonRssKiB);
      d.processes.push(mem.processes);
      d.browser.add(browserSeen(mem.exes));
    };
    log(`${kind.kind}: warm-up`);
    for (const tool of TOOLS) await once(tool, 'warm', false);
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 ? [...TOOLS].reverse() : TOOLS;
      log(`${kind.kind}: round ${i + 1}/${ROUNDS} (${order.join(' then ')})`);
      for (const tool of order) await once(tool, `p${i}`, true);
    }
    left = [...processesMentioning(ourTmp), ...processesMentioning(peerTmp)];
  } finally {
    await cleanup();
  }
  const m = (tool, key) => median(data[tool][key]);
  return { kind: kind.kind, data, m, left, removed: !existsSync(ourTmp) && !existsSync(peerTmp) };
}

export async function run({ res, log }) {
  const peer = await installPeer(res, log);
  if (peer.skip) {
    return {
      tables: [],
      checks: [],
      notes: [`skipped: ${peer.skip}`],
      data: { skipped: peer.skip },
    };
  }
  const url = `${await serveLoopback(res, 'page server', (_req, resp) => {
    resp.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    resp.end(PAGE);
  })}/`;
  const emu = await sdk.startEmulator({ site: false });
  res.defer('emulator', () => emu.stop());

  const results = [];
  const skipped = [];
  for (const kind of browserKinds()) {
    if (kind.missing) skipped.push(`${kind.kind}: skipped, ${kind.missing}`);
    else results.push(await runKind({ res, log, url, emu, peer, kind }));
  }

  const head = ['measure (median)', 'aluvia', 'agent-browser', 'aluvia / agent-browser'];
  const row = (r, label, key, conv = (x) => x, d = 0) => {
    const a = conv(r.m('aluvia', key));
    const b = conv(r.m('agent-browser', key));
    return [label, fmt(a, d), fmt(b, d), fmt(a / b, 2)];
  };
  const tables = results.map((r) => ({
    title: `${r.kind}: ${ROUNDS} alternating pairs on ${kind(r.kind).executable}, one session at a time, idle ${IDLE_MS} ms before memory`,
    head,
    rows: [
      row(r, 'session start / open <url>, ms', 'startMs'),
      row(r, 'session list (1 running), ms', 'listMs'),
      row(r, 'session close, ms (CLI returns)', 'closeMs'),
      row(r, 'close → every process gone, ms', 'goneMs'),
      row(r, 'idle session PSS (daemon and all under it), MiB', 'pssKiB', mib, 1),
      row(r, 'idle session USS (private pages only), MiB', 'ussKiB', mib, 1),
      row(r, 'daemon alone PSS, MiB', 'daemonPssKiB', mib, 1),
      row(r, 'daemon alone RSS, MiB', 'daemonRssKiB', mib, 1),
      row(r, 'processes per session', 'processes', (x) => x, 0),
      ['browser seen in the process tree', ...TOOLS.map((tool) => [...r.data[tool].browser].join(',')), ''],
      ['left running after the section / temp removed', r.left.length, '', r.removed ? 'yes' : 'no'],
    ],
  }));

  const checks = [];
  for (const r of results) {
    const start = r.m('aluvia', 'startMs') / r.m('agent-browser', 'startMs');
    const pss = r.m('aluvia', 'pssKiB') / r.m('agent-browser', 'pssKiB');
    checks.push({
      key: `startRatio.${r.kind}`,
      label: `${r.kind}: session start, aluvia / agent-browser`,
      value: start,
      display: `${fmt(start, 2)}× (${fmt(r.m('aluvia', 'startMs'))} / ${fmt(r.m('agent-browser', 'startMs'))} ms)`,
      target: '≤ 0.8×',
      met: start <= 0.8,
    });
    checks.push({
      key: `pssRatio.${r.kind}`,
      label: `${r.kind}: idle session PSS, aluvia / agent-browser`,
      value: pss,
      display: `${fmt(pss, 2)}× (${fmt(mib(r.m('aluvia', 'pssKiB')), 1)} / ${fmt(mib(r.m('agent-browser', 'pssKiB')), 1)} MiB)`,
      target: '≤ 0.9×',
      met: pss <= 0.9,
    });
  }

  return {
    tables,
    checks,
    notes: [
      ...skipped,
      `agent-browser ${peer.version.replace(/^agent-browser\s*/, '')} runs as its native binary (what its global npm install links to), with a private HOME, TMPDIR and socket folder, its version check off, and its defaults otherwise; its daemon is the pid in <socket folder>/<session>.pid.`,
      'aluvia runs `node bin/aluvia.js` (a Node start per command) and its native `aluvia-daemon` per session (Node and lib/cli/daemon.js where that is not built); its browser goes through its local proxy and the emulated gateway, with block detection on, in a network namespace where available. agent-browser opens the page directly.',
      nodeStartNote(),
      'Ratios are medians of this run, ours over theirs: below 1 means aluvia is faster or smaller.',
      "PSS shares each page among every process that maps it, other Chromium processes on the machine included (another user's tests), so it moves with what else runs; USS counts only the pages no other process maps, a lower bound.",
    ],
    data: results.map((r) => ({
      kind: r.kind,
      left: r.left,
      ...Object.fromEntries(TOOLS.map((tool) => [tool, { ...r.data[tool], browser: [...r.data[tool].browser] }])),
    })),
  };
}

const kind = (k) => browserKinds().find((x) => x.kind === k) ?? { executable: k };
