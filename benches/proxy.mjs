// Section "proxy": the local smart proxy's data path on loopback.
//
//   1. Small keep-alive GETs (100-byte body) at concurrency 1 and 32:
//      direct to the origin, through our proxy, through proxy-chain.
//   2. A 200 MB body: direct vs through our proxy's CONNECT tunnel (and
//      proxy-chain's, for reference).
//
// Each is measured with two clients. The targets are checked on the native
// one (wrk for the GETs, curl for the download): it costs a few µs of CPU per
// request, so the figures show the proxies. The Node client (a fresh process
// per case) is what a Node application sees; on a machine with 2 cores it
// needs as much CPU as the origin and the proxy together, so it caps every
// ratio (see the notes the section prints).
//
// Process layout (identical for every case):
//   this process      → our proxy (Rust/tokio threads; its JS thread idles) + the emulator
//   child "targets"   → the origin HTTP server (Node)
//   child "proxy-chain" → proxy-chain's Server, direct mode (Node)
//   child per case    → the load generator / downloader, a fresh process per case
import http from 'node:http';
import { createRequire } from 'node:module';
import { startChild } from './lib/resources.mjs';
import { startClient } from './lib/loopback.mjs';
import { hasCommand, wrk, curlDownload, pin, allowedCpus } from './lib/native.mjs';

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
// wrk takes whole seconds.
const WRK_WARMUP_S = Math.max(1, Math.round(WARMUP_MS / 1000));
const WRK_DURATION_S = Math.max(1, Math.round(DURATION_MS / 1000));

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
        res.on('end', () =>
          res.statusCode === 200 && n === 100
            ? resolve()
            : reject(new Error(`probe via :${proxyPort} → ${res.statusCode}, ${n} bytes`)),
        );
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
  const { client, connection } = await startClient(sdk, res);
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

  // The clients. Without wrk or curl (see scripts/setup.mjs) the section runs
  // with the Node client alone and checks the targets on it.
  const clients = [];
  if (hasCommand('wrk')) clients.push({ key: 'wrk', label: 'wrk', get: true });
  if (hasCommand('curl')) clients.push({ key: 'curl', label: 'curl', download: true });
  // Diagnostic: the origin and curl share one CPU and the proxy gets another
  // to itself, as it would on a machine with a core to spare.
  const cpuList = hasCommand('taskset') ? allowedCpus() : [];
  const [endsCpu, proxyCpu] = cpuList;
  if (hasCommand('curl') && cpuList.length >= 2) {
    clients.push({ key: 'curlPinned', label: 'curl, pinned', download: true, pinned: true });
  }
  clients.push({ key: 'node', label: 'Node', get: true, download: true });
  const getClients = clients.filter((c) => c.get);
  const downloadClients = clients.filter((c) => c.download);
  const checkGet = getClients[0].key;
  const checkDownload = downloadClients.filter((c) => !c.pinned)[0].key;
  if (checkGet === 'node') log('wrk not found: the GET targets are checked on the Node load generator');
  if (checkDownload === 'node') log('curl not found: the tunnel target is checked on the Node downloader');

  /** One measured GET case; the warm-up runs first and is discarded. */
  async function getCase(client, r, c) {
    if (client === 'wrk') {
      const args = { targetPort, proxyPort: r.proxyPort, concurrency: c };
      const warm = await wrk(res, { ...args, seconds: WRK_WARMUP_S });
      const result = await wrk(res, { ...args, seconds: WRK_DURATION_S });
      return { ...result, warmupRequests: warm.requests, warmupErrors: warm.errors };
    }
    const gen = startChild(
      res,
      'loadgen.mjs',
      {
        targetPort,
        proxyPort: r.proxyPort,
        concurrency: c,
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
        expectBytes: smallBytes,
      },
      { label: `loadgen ${r.key} c=${c}` },
    );
    const result = await gen.next(WARMUP_MS + DURATION_MS + 20_000);
    await gen.exited;
    await gen.stop();
    return result;
  }

  /** One download of /big; MB/s. */
  async function downloadCase(client, proxyPort) {
    if (client === 'curl')
      return (await curlDownload(res, { targetPort, proxyPort, expectBodyBytes: BIG_BYTES })).mbPerS;
    if (client === 'curlPinned') {
      const proxies = [process.pid, pc.child.pid];
      pin(targets.child.pid, String(endsCpu));
      for (const pid of proxies) pin(pid, String(proxyCpu));
      try {
        return (await curlDownload(res, { targetPort, proxyPort, expectBodyBytes: BIG_BYTES, cpu: endsCpu })).mbPerS;
      } finally {
        for (const pid of [targets.child.pid, ...proxies]) pin(pid, cpuList.join(','));
      }
    }
    const dl = startChild(
      res,
      'download.mjs',
      { targetPort, proxyPort, expectBodyBytes: BIG_BYTES },
      { label: `download via ${proxyPort ?? 'direct'}` },
    );
    const result = await dl.next(60_000);
    await dl.exited;
    await dl.stop();
    return result.mbPerS;
  }

  // 1. Small keep-alive GETs.
  // Rounds are interleaved (round 1 runs every case, then round 2, ...) so a
  // burst of outside CPU load hits all routes alike; per case, each metric is
  // the median over rounds.
  const samples = {};
  for (let round = 1; round <= ROUNDS; round++) {
    for (const c of CONCURRENCIES) {
      for (const client of getClients) {
        for (const r of routes) {
          log(`GET c=${c} ${r.label}, ${client.label} client (round ${round}/${ROUNDS})`);
          const conns0 = await originConnections();
          const cpu0 = await proxyCpuUs(r.key);
          const wall0 = performance.now();
          const result = await getCase(client.key, r, c);
          const wallMs = performance.now() - wall0;
          const cpuUs = cpu0 == null ? null : (await proxyCpuUs(r.key)) - cpu0;
          const allRequests = result.requests + result.warmupRequests;
          (samples[`${client.key}:${r.key}@${c}`] ??= {
            client: client.key,
            route: r.key,
            label: r.label,
            concurrency: c,
            rounds: [],
          }).rounds.push({
            ...result,
            errors: result.errors + (result.warmupErrors ?? 0),
            originConnections: (await originConnections()) - conns0,
            proxyCpuUsPerRequest: cpuUs == null ? null : cpuUs / allRequests,
            proxyCpuCores: cpuUs == null ? null : cpuUs / 1000 / wallMs,
          });
        }
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
  const tunnel = {};
  const tunnelCpuUsPerMB = [];
  for (let i = 0; i < TUNNEL_TRIALS; i++) {
    for (const client of downloadClients) {
      for (const r of routes) {
        log(`download ${BIG_BYTES / 1e6} MB ${r.key}, ${client.label} client (trial ${i + 1}/${TUNNEL_TRIALS})`);
        const cpu0 = await proxyCpuUs(r.key);
        ((tunnel[client.key] ??= {})[r.key] ??= []).push(await downloadCase(client.key, r.proxyPort));
        if (r.key === 'ours' && !client.pinned)
          tunnelCpuUsPerMB.push(((await proxyCpuUs(r.key)) - cpu0) / (BIG_BYTES / 1e6));
      }
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
  const clientLabel = (key) => clients.find((c) => c.key === key).label;
  const getRows = Object.values(http1).map((r) => [
    `c=${r.concurrency}`,
    clientLabel(r.client),
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
  const tunnelMedian = (client, route) => median(tunnel[client][route]);
  const tunnelRows = downloadClients.flatMap((client) =>
    routes.map((r) => [
      client.label,
      r.key === 'proxyChain'
        ? `${r.label} (CONNECT tunnel, for reference)`
        : r.key === 'ours'
          ? `${r.label} (CONNECT tunnel)`
          : r.label,
      fmt(tunnelMedian(client.key, r.key), 0),
      tunnel[client.key][r.key].map((x) => x.toFixed(0)).join(' / '),
      r.key === 'direct'
        ? ''
        : `${((tunnelMedian(client.key, r.key) / tunnelMedian(client.key, 'direct')) * 100).toFixed(1)} %`,
    ]),
  );
  const tunnelCpu = median(tunnelCpuUsPerMB);

  // Ratios per client, for the context table and the checks.
  const cMax = Math.max(...CONCURRENCIES);
  const cMin = Math.min(...CONCURRENCIES);
  const ratios = {};
  for (const client of getClients) {
    const at = (route, c) => http1[`${client.key}:${route}@${c}`];
    const [oursHi, pcHi, directHi, oursLo, directLo] = [
      at('ours', cMax),
      at('proxyChain', cMax),
      at('direct', cMax),
      at('ours', cMin),
      at('direct', cMin),
    ];
    ratios[client.key] = {
      rpsOursOverProxyChain: oursHi.rps / pcHi.rps,
      rpsDirectOverProxyChain: directHi.rps / pcHi.rps,
      rpsOursOverDirect: oursHi.rps / directHi.rps,
      addedP99Ms: oursLo.p99Ms - directLo.p99Ms,
      cpuProxyChainOverOurs: pcHi.proxyCpuUsPerRequest / oursHi.proxyCpuUsPerRequest,
      oursErrors: oursHi.errors + oursLo.errors,
    };
  }
  for (const client of downloadClients) {
    (ratios[client.key] ??= {}).tunnelOursOverDirect =
      tunnelMedian(client.key, 'ours') / tunnelMedian(client.key, 'direct');
  }
  const contextRows = clients.map((client) => {
    const x = ratios[client.key];
    const pct = (v) => (v == null ? '-' : `${(v * 100).toFixed(0)} %`);
    const times = (v) => (v == null ? '-' : `${v.toFixed(2)}×`);
    return [
      client.label,
      times(x.rpsOursOverProxyChain),
      times(x.rpsDirectOverProxyChain),
      pct(x.rpsOursOverDirect),
      x.addedP99Ms == null ? '-' : `${x.addedP99Ms.toFixed(3)} ms`,
      times(x.cpuProxyChainOverOurs),
      x.tunnelOursOverDirect == null ? '-' : `${(x.tunnelOursOverDirect * 100).toFixed(1)} %`,
    ];
  });

  // Checks, on the native clients when they are there.
  const checks = [];
  const g = ratios[checkGet];
  checks.push({
    key: 'rpsOursOverProxyChain',
    label: `requests/s ours / proxy-chain at c=${cMax} (${clientLabel(checkGet)})`,
    value: g.rpsOursOverProxyChain,
    display: `${g.rpsOursOverProxyChain.toFixed(2)}×`,
    target: `≥ ${TARGETS.rps32Ratio}×`,
    met: g.rpsOursOverProxyChain >= TARGETS.rps32Ratio && g.oursErrors === 0,
  });
  checks.push({
    key: 'addedP99MsC1',
    label: `added p99 latency at c=${cMin}, ours p99 − direct p99 (${clientLabel(checkGet)})`,
    value: g.addedP99Ms,
    display: `${g.addedP99Ms.toFixed(3)} ms`,
    target: `< ${TARGETS.addedP99Ms} ms`,
    met: g.addedP99Ms < TARGETS.addedP99Ms && g.oursErrors === 0,
  });
  const t = ratios[checkDownload].tunnelOursOverDirect;
  checks.push({
    key: 'tunnelOursOverDirect',
    label: `tunnel throughput ours / direct, median (${clientLabel(checkDownload)})`,
    value: t,
    display: `${(t * 100).toFixed(1)} %`,
    target: `≥ ${TARGETS.tunnelRatio * 100} %`,
    met: t >= TARGETS.tunnelRatio,
  });

  const anyErrors = Object.values(http1).some((r) => r.errors > 0);
  const notes = [
    `Clients: wrk (one thread, keep-alive connections = concurrency) and curl are native and cost a few µs of CPU per request; the Node load generator (one keep-alive http.Agent with maxSockets = concurrency) and downloader (raw socket) run as a fresh child process per case. The origin server and proxy-chain each run in their own Node child process; our proxy runs on Rust threads inside the bench's main process.`,
    `Each GET case: warm-up discarded (${WRK_WARMUP_S} s with wrk, ${WARMUP_MS} ms with Node), then ${WRK_DURATION_S} s / ${DURATION_MS} ms measured, ${ROUNDS} interleaved rounds; req/s, p50, p99, mean and the diagnostics are medians over rounds ("requests" is the total); latency = request sent → response read, in the client.`,
    `Diagnostics: "origin conns" = TCP connections the origin accepted during the case (warm-up included; ideally = concurrency with keep-alive on both legs, twice that with wrk, whose warm-up is a separate run); "proxy CPU µs/req" = CPU time (user+sys) of the proxy's process per request, warm-up included; "proxy cores" = that CPU time / case wall time (2 cores exist and are shared with the origin and the client). Tunnel: our proxy used ${fmt(tunnelCpu, 0)} µs CPU per MB (median).`,
    `Tunnel: GET of ${BIG_BYTES / 1e6} MB (200 OK + body), ${TUNNEL_TRIALS} trial(s) per client and route, alternating, median shown; timed from TCP connect (incl. CONNECT handshake) to the last byte.${clients.some((c) => c.pinned) ? ` "curl, pinned" (a diagnostic, not a target): the origin and curl are held on CPU ${endsCpu} and the proxy under test on CPU ${proxyCpu} for the download, so the proxy's CPU does not compete with the ends'.` : ''}`,
    `Why the clients differ: every route's req/s is bounded by the CPU the client, the origin and the proxy need together. With the Node client, direct / proxy-chain (${(ratios.node.rpsDirectOverProxyChain).toFixed(2)}× here) caps ours / proxy-chain, however cheap our proxy is; the CPU per request (proxy-chain / ours = ${ratios.node.cpuProxyChainOverOurs.toFixed(2)}× with Node${ratios.wrk ? `, ${ratios.wrk.cpuProxyChainOverOurs.toFixed(2)}× with wrk` : ''}) is the cost that does not depend on the client. A tunnel's extra loopback hop costs the kernel about what each end's TCP processing costs, so the cheaper the client, the larger its share.`,
  ];
  if (anyErrors) notes.push('Some requests failed (see the errors column): the numbers above are suspect.');

  return {
    name,
    title,
    tables: [
      {
        title: 'Small keep-alive GETs (100-byte body)',
        head: [
          'conc',
          'client',
          'route',
          'req/s',
          'p50 ms',
          'p99 ms',
          'mean ms',
          'req/s per round',
          'requests',
          'errors',
          'origin conns',
          'proxy CPU µs/req',
          'proxy cores',
        ],
        rows: getRows,
      },
      {
        title: `${BIG_BYTES / 1e6} MB download`,
        head: ['client', 'route', 'MB/s (median)', 'trials MB/s', 'of direct'],
        rows: tunnelRows,
      },
      {
        title: 'Ratios by client',
        head: [
          'client',
          `req/s ours / proxy-chain c=${cMax}`,
          `direct / proxy-chain c=${cMax}`,
          `ours / direct c=${cMax}`,
          `added p99 c=${cMin}`,
          'CPU/req proxy-chain / ours',
          'tunnel ours / direct',
        ],
        rows: contextRows,
      },
    ],
    checks,
    notes,
    data: {
      config: {
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
        wrkWarmupS: WRK_WARMUP_S,
        wrkDurationS: WRK_DURATION_S,
        rounds: ROUNDS,
        concurrencies: CONCURRENCIES,
        tunnelTrials: TUNNEL_TRIALS,
        tunnelBytes: BIG_BYTES,
        clients: clients.map((c) => c.key),
        checkedOn: { get: checkGet, download: checkDownload },
      },
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
      ratios,
      tunnelMBps: tunnel,
      tunnelOursCpuUsPerMB: tunnelCpu,
      proxyChainVersion: pcVersion,
      engineTraffic: traffic,
    },
  };
}
