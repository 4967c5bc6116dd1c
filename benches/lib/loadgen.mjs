// Child process: closed-loop HTTP load generator.
//
// `concurrency` workers share one keep-alive http.Agent (maxSockets =
// concurrency); each sends a GET, reads the whole body, and sends the next.
// Direct: GET /x to the target. Proxied: absolute-form GET http://target/x to
// the proxy port. Requests completing during the warm-up are discarded; after
// it, every request started and completed inside the measuring window counts.
import http from 'node:http';
import { childSetup } from './resources.mjs';

const { config, send } = childSetup();
const { targetPort, proxyPort = null, path = '/x', concurrency, warmupMs, durationMs, expectBytes } = config;

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
const targetHost = `127.0.0.1:${targetPort}`;
const reqOpts = proxyPort
  ? { host: '127.0.0.1', port: proxyPort, path: `http://${targetHost}${path}`, headers: { host: targetHost }, agent }
  : { host: '127.0.0.1', port: targetPort, path, agent };

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

function once() {
  return new Promise((resolve) => {
    const t0 = now();
    const req = http.request(reqOpts, (res) => {
      let n = 0;
      res.on('data', (c) => (n += c.length));
      res.on('end', () =>
        resolve({
          t0,
          t1: now(),
          ok: res.statusCode === 200 && (expectBytes == null || n === expectBytes),
          status: res.statusCode,
        }),
      );
      res.on('error', (e) => resolve({ t0, t1: now(), ok: false, status: String(e.code ?? e.message) }));
    });
    req.on('error', (e) => resolve({ t0, t1: now(), ok: false, status: String(e.code ?? e.message) }));
    req.end();
  });
}

const start = now();
const measureFrom = start + warmupMs;
const measureTo = measureFrom + durationMs;
const lat = new Float64Array(4_000_000);
let n = 0;
let errors = 0;
let warmupRequests = 0;
const errorKinds = {};

async function worker() {
  for (;;) {
    const r = await once();
    if (r.t1 > measureTo) return;
    if (r.t0 < measureFrom) {
      warmupRequests++;
      continue;
    }
    if (!r.ok) {
      errors++;
      errorKinds[r.status] = (errorKinds[r.status] ?? 0) + 1;
      if (errors > 1000) return; // a broken target: stop early, reported below
      continue;
    }
    if (n < lat.length) lat[n++] = r.t1 - r.t0;
  }
}

await Promise.all(Array.from({ length: concurrency }, worker));
agent.destroy();

const sorted = lat.subarray(0, n).sort();
const pct = (q) => (n ? sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] : NaN);
let sum = 0;
for (let i = 0; i < n; i++) sum += sorted[i];
send({
  type: 'result',
  requests: n,
  errors,
  errorKinds,
  warmupRequests,
  durationMs,
  rps: n / (durationMs / 1000),
  meanMs: n ? sum / n : NaN,
  p50Ms: pct(0.5),
  p90Ms: pct(0.9),
  p99Ms: pct(0.99),
  maxMs: n ? sorted[n - 1] : NaN,
});
setTimeout(() => process.exit(0), 20);
