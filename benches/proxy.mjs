// Section "proxy": the local smart proxy's data path on loopback.
//
//   1. Small keep-alive GETs (100-byte body) at concurrency 1 and 32:
//      direct to the origin, through our proxy, through proxy-chain.
//   2. A 200 MB body: direct vs through our proxy's CONNECT tunnel (and
//      proxy-chain's, for reference).
//
// Process layout (identical for every case):
//   this process      → our proxy (Rust/tokio threads; its JS thread idles) + the emulator
//   child "targets"   → the origin HTTP server (Node)
//   child "proxy-chain" → proxy-chain's Server, direct mode (Node)
//   child per case    → the load generator / downloader (Node), a fresh process per case
import http from 'node:http';
import { createRequire } from 'node:module';
import { startChild } from './lib/resources.mjs';

const require = createRequire(import.meta.url);
const sdk = require('../lib/index.js');

export const name = 'proxy';
export const title = 'Local smart proxy vs direct vs proxy-chain (loopback)';

const env = (k, d) => (process.env[k] ? Number(process.env[k]) : d);
const WARMUP_MS = env('BENCH_WARMUP_MS', 500);
const DURATION_MS = env('BENCH_DURATION_MS', 2000);
const CONCURRENCIES = (process.env.BENCH_CONCURRENCY ?? '1,32').split(',').map(Number);
const ROUNDS = env('BENCH_ROUNDS', 3);
const TUNNEL_TRIALS = env('BENCH_TUNNEL_TRIALS', 5);
const BIG_BYTES = env('BENCH_TUNNEL_BYTES', 200_000_000);

const TARGETS = {
  rps32Ratio: 3, // ours / proxy-chain requests/s at c=32, at least
  addedP99Ms: 1, // ours p99 − direct p99 at c=1, below
  tunnelRatio: 0.8, // ours / direct MB/s, at least
};

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** One GET through `proxyPort` (absolute-form) to check the path works before measuring. */
function probe(proxyPort, targetPort) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: proxyPort,
        path: `http://127.0.0.1:${targetPort}/x`,
        headers: { host: `127.0.0.1:${targetPort}`, connection: 'close' },
      },
      (res) => {
        let n = 0;
        res.on('data', (c) => (n += c.length));
        res.on('end', () => (res.statusCode === 200 && n === 100 ? resolve() : reject(new Error(`probe via :${proxyPort} → ${res.statusCode}, ${n} bytes`))));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error(`probe via :${proxyPort} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

export async function run({ res, log }) {
  // Origin server.
  const targets = startChild(res, 'targets.mjs', { bigBytes: BIG_BYTES }, { label: 'targets' });
  const { port: targetPort, smallBytes } = await targets.next();

  // Our proxy: emulator + client with the default rules [] (everything direct).
  log('starting the emulator and our proxy');
  const emu = await sdk.startEmulator({ site: false });
  res.defer('emulator', () => emu.stop());
  const client = new sdk.AluviaClient({
    apiKey: emu.apiKey,
    apiBaseUrl: emu.apiBaseUrl,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    logLevel: 'silent',
  });
  let connection = null;
  res.defer('aluvia client', () => (connection ? connection.close() : client.stop()));
  connection = await client.start();
  const oursPort = connection.port;

  // proxy-chain.
  const pc = startChild(res, 'proxy-chain-server.mjs', {}, { label: 'proxy-chain' });
  const { port: pcPort, version: pcVersion } = await pc.next();

  await probe(oursPort, targetPort);
  await probe(pcPort, targetPort);

  const routes = [
    { key: 'direct', label: 'direct', proxyPort: null },
    { key: 'ours', label: 'ours (@aluvia/sdk)', proxyPort: oursPort },
    { key: 'proxyChain', label: `proxy-chain ${pcVersion}`, proxyPort: pcPort },
  ];

  // Diagnostics sampled around every case: connections the origin accepted,
  // and CPU time used by the proxy under test (ours: this process, whose JS
  // thread idles; proxy-chain: its child process).
  const originConnections = async () => {
    targets.send({ type: 'stats' });
    return (await targets.next(5000)).connections;
  };
  const proxyCpuUs = async (key) => {
    let u;
    if (key === 'ours') u = process.cpuUsage();
    else if (key === 'proxyChain') {
      pc.send({ type: 'stats' });
      u = (await pc.next(5000)).cpu;
    } else return null;
    return u.user + u.system;
  };

  // 1. Small keep-alive GETs.
  // Rounds are interleaved (round 1 runs every case, then round 2, ...) so a
  // burst of outside CPU load hits all routes alike; per case, each metric is
  // the median over rounds.
  const samples = {};
  for (let round = 1; round <= ROUNDS; round++) {
    for (const c of CONCURRENCIES) {
      for (const r of routes) {
        log(`GET c=${c} ${r.label}: ${WARMUP_MS} ms warm-up + ${DURATION_MS} ms (round ${round}/${ROUNDS})`);
        const conns0 = await originConnections();
        const cpu0 = await proxyCpuUs(r.key);
        const wall0 = performance.now();
        const gen = startChild(
          res,
          'loadgen.mjs',
          { targetPort, proxyPort: r.proxyPort, concurrency: c, warmupMs: WARMUP_MS, durationMs: DURATION_MS, expectBytes: smallBytes },
          { label: `loadgen ${r.key} c=${c}` },
        );
        const result = await gen.next(WARMUP_MS + DURATION_MS + 20_000);
        await gen.exited;
        await gen.stop();
        const wallMs = performance.now() - wall0;
        const cpuUs = cpu0 == null ? null : (await proxyCpuUs(r.key)) - cpu0;
        const allRequests = result.requests + result.warmupRequests;
        (samples[`${r.key}@${c}`] ??= { route: r.key, label: r.label, concurrency: c, rounds: [] }).rounds.push({
          ...result,
          originConnections: (await originConnections()) - conns0,
          proxyCpuUsPerRequest: cpuUs == null ? null : cpuUs / allRequests,
          proxyCpuCores: cpuUs == null ? null : cpuUs / 1000 / wallMs,
        });
      }
    }
  }
  const http1 = {};
  for (const [k, { rounds, ...meta }] of Object.entries(samples)) {
    const med = (f) => (rounds[0][f] == null ? null : median(rounds.map((x) => x[f])));
    http1[k] = {
      ...meta,
      rps: med('rps'),
      p50Ms: med('p50Ms'),
      p90Ms: med('p90Ms'),
      p99Ms: med('p99Ms'),
      meanMs: med('meanMs'),
      maxMs: Math.max(...rounds.map((x) => x.maxMs)),
      requests: rounds.reduce((a, x) => a + x.requests, 0),
      errors: rounds.reduce((a, x) => a + x.errors, 0),
      originConnections: med('originConnections'),
      proxyCpuUsPerRequest: med('proxyCpuUsPerRequest'),
      proxyCpuCores: med('proxyCpuCores'),
      rpsRounds: rounds.map((x) => x.rps),
      p99Rounds: rounds.map((x) => x.p99Ms),
    };
  }

  // 2. 200 MB through a CONNECT tunnel, alternating direct / ours / proxy-chain.
  const tunnel = { direct: [], ours: [], proxyChain: [] };
  const tunnelCpuUsPerMB = [];
  for (let i = 0; i < TUNNEL_TRIALS; i++) {
    for (const key of ['direct', 'ours', 'proxyChain']) {
      log(`download ${BIG_BYTES / 1e6} MB ${key} (trial ${i + 1}/${TUNNEL_TRIALS})`);
      const cpu0 = await proxyCpuUs(key);
      const dl = startChild(
        res,
        'download.mjs',
        { targetPort, proxyPort: { direct: null, ours: oursPort, proxyChain: pcPort }[key], expectBodyBytes: BIG_BYTES },
        { label: `download ${key}` },
      );
      const result = await dl.next(60_000);
      await dl.exited;
      await dl.stop();
      tunnel[key].push(result.mbPerS);
      if (key === 'ours') tunnelCpuUsPerMB.push(((await proxyCpuUs(key)) - cpu0) / (BIG_BYTES / 1e6));
    }
  }

  // What our engine says it carried (all of it should be on the direct route).
  let traffic = null;
  try {
    traffic = client.getTrafficStats();
  } catch (err) {
    traffic = { error: String(err?.message ?? err) };
  }

  // Tables.
  const fmt = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  const getRows = Object.values(http1).map((r) => [
    `c=${r.concurrency}`,
    r.label,
    Math.round(r.rps).toLocaleString('en-US'),
    fmt(r.p50Ms),
    fmt(r.p99Ms),
    fmt(r.meanMs),
    r.rpsRounds.map((x) => Math.round(x)).join(' / '),
    String(r.requests),
    String(r.errors),
    String(r.originConnections),
    r.proxyCpuUsPerRequest == null ? '-' : fmt(r.proxyCpuUsPerRequest, 1),
    r.proxyCpuCores == null ? '-' : fmt(r.proxyCpuCores, 2),
  ]);
  const tunnelDirect = median(tunnel.direct);
  const tunnelOurs = median(tunnel.ours);
  const tunnelRows = [
    ['direct', fmt(tunnelDirect, 0), tunnel.direct.map((x) => x.toFixed(0)).join(' / ')],
    ['ours (CONNECT tunnel)', fmt(tunnelOurs, 0), tunnel.ours.map((x) => x.toFixed(0)).join(' / ')],
    [`proxy-chain ${pcVersion} (CONNECT tunnel, for reference)`, fmt(median(tunnel.proxyChain), 0), tunnel.proxyChain.map((x) => x.toFixed(0)).join(' / ')],
  ];
  const tunnelCpu = median(tunnelCpuUsPerMB);

  // Checks.
  const checks = [];
  const cMax = Math.max(...CONCURRENCIES);
  const cMin = Math.min(...CONCURRENCIES);
  const oursHi = http1[`ours@${cMax}`];
  const pcHi = http1[`proxyChain@${cMax}`];
  const anyErrors = Object.values(http1).some((r) => r.errors > 0);
  if (oursHi && pcHi) {
    const v = oursHi.rps / pcHi.rps;
    checks.push({
      key: 'rpsOursOverProxyChain',
      label: `requests/s ours / proxy-chain at c=${cMax}`,
      value: v,
      display: `${v.toFixed(2)}×`,
      target: `≥ ${TARGETS.rps32Ratio}×`,
      met: v >= TARGETS.rps32Ratio && oursHi.errors === 0,
    });
  }
  const oursLo = http1[`ours@${cMin}`];
  const directLo = http1[`direct@${cMin}`];
  if (oursLo && directLo) {
    const v = oursLo.p99Ms - directLo.p99Ms;
    checks.push({
      key: 'addedP99MsC1',
      label: `added p99 latency at c=${cMin} (ours p99 − direct p99)`,
      value: v,
      display: `${v.toFixed(3)} ms`,
      target: `< ${TARGETS.addedP99Ms} ms`,
      met: v < TARGETS.addedP99Ms && oursLo.errors === 0,
    });
  }
  {
    const v = tunnelOurs / tunnelDirect;
    checks.push({
      key: 'tunnelOursOverDirect',
      label: 'tunnel throughput ours / direct (median)',
      value: v,
      display: `${(v * 100).toFixed(1)} %`,
      target: `≥ ${TARGETS.tunnelRatio * 100} %`,
      met: v >= TARGETS.tunnelRatio,
    });
  }

  const notes = [
    `Load generator: a fresh Node child process per case (closed loop, one keep-alive http.Agent with maxSockets = concurrency), identical for all three routes; the origin server and proxy-chain each run in their own Node child process; our proxy runs on Rust threads inside the bench's main process.`,
    `Each GET case: ${WARMUP_MS} ms warm-up (discarded) + ${DURATION_MS} ms measured, ${ROUNDS} interleaved rounds; req/s, p50, p99, mean and the diagnostics are medians over rounds ("requests" is the total); latency = request start → last body byte, in the load generator.`,
    `Diagnostics: "origin conns" = TCP connections the origin accepted during the case (warm-up included; ideally = concurrency with keep-alive on both legs); "proxy CPU µs/req" = CPU time (user+sys) of the proxy's process per request, warm-up included; "proxy cores" = that CPU time / case wall time (2 cores exist and are shared with the origin and the load generator). Tunnel: our proxy used ${fmt(tunnelCpu, 0)} µs CPU per MB (median).`,
    `Tunnel: raw-socket GET of ${BIG_BYTES / 1e6} MB (200 OK + body), ${TUNNEL_TRIALS} trial(s) per route alternating, median shown; timed from TCP connect (incl. CONNECT handshake) to the last byte.`,
  ];
  const directHi = http1[`direct@${cMax}`];
  if (directHi && oursHi && pcHi) {
    notes.push(
      `Context at c=${cMax}: ours reaches ${((oursHi.rps / directHi.rps) * 100).toFixed(0)} % of direct req/s, proxy-chain ${((pcHi.rps / directHi.rps) * 100).toFixed(0)} %; ` +
        `direct / proxy-chain = ${(directHi.rps / pcHi.rps).toFixed(2)}× is the ceiling for the ours / proxy-chain ratio here, since the Node origin and the Node load generator share the same CPUs. ` +
        `CPU per request, proxy-chain / ours = ${(pcHi.proxyCpuUsPerRequest / oursHi.proxyCpuUsPerRequest).toFixed(2)}× (informational, not a target).`,
    );
  }
  if (anyErrors) notes.push('Some requests failed (see the errors column): the numbers above are suspect.');

  return {
    name,
    title,
    tables: [
      {
        title: 'Small keep-alive GETs (100-byte body)',
        head: ['conc', 'route', 'req/s', 'p50 ms', 'p99 ms', 'mean ms', 'req/s per round', 'requests', 'errors', 'origin conns', 'proxy CPU µs/req', 'proxy cores'],
        rows: getRows,
      },
      {
        title: `${BIG_BYTES / 1e6} MB download`,
        head: ['route', 'MB/s (median)', 'trials MB/s'],
        rows: tunnelRows,
      },
    ],
    checks,
    notes,
    data: {
      config: { warmupMs: WARMUP_MS, durationMs: DURATION_MS, rounds: ROUNDS, concurrencies: CONCURRENCIES, tunnelTrials: TUNNEL_TRIALS, tunnelBytes: BIG_BYTES },
      http: Object.fromEntries(
        Object.entries(http1).map(([k, r]) => [
          k,
          {
            rps: r.rps,
            p50Ms: r.p50Ms,
            p90Ms: r.p90Ms,
            p99Ms: r.p99Ms,
            meanMs: r.meanMs,
            maxMs: r.maxMs,
            requests: r.requests,
            errors: r.errors,
            rpsRounds: r.rpsRounds,
            p99Rounds: r.p99Rounds,
            originConnections: r.originConnections,
            proxyCpuUsPerRequest: r.proxyCpuUsPerRequest,
            proxyCpuCores: r.proxyCpuCores,
          },
        ]),
      ),
      tunnelMBps: { direct: tunnelDirect, ours: tunnelOurs, proxyChain: median(tunnel.proxyChain), trials: tunnel },
      tunnelOursCpuUsPerMB: tunnelCpu,
      proxyChainVersion: pcVersion,
      engineTraffic: traffic,
    },
  };
}
