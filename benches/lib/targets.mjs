// Child process: the origin servers the proxy bench talks to.
//   GET /x     → 100-byte text body, keep-alive
//   GET /big   → `bigBytes` bytes (default 200 MB = 200e6 bytes), streamed with back-pressure
// It lives in its own process so that it shares an event loop with neither the
// load generator nor proxy-chain.
import http from 'node:http';
import { once } from 'node:events';
import { childSetup } from './resources.mjs';

const { config, send } = childSetup();
const SMALL = Buffer.from(`${'x'.repeat(99)}\n`); // 100 bytes
const BIG = config.bigBytes ?? 200_000_000;
const CHUNK = Buffer.alloc(1024 * 1024, 0x61);

function streamBig(res) {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
  let left = BIG;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      const ok = res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => (left = 0));
  pump();
}

const server = http.createServer((req, res) => {
  if (req.url === '/big') return streamBig(res);
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL.length });
  res.end(SMALL);
});
let connections = 0;
server.on('connection', () => connections++);
process.on('message', (m) => {
  if (m?.type === 'stats') send({ type: 'stats', connections, cpu: process.cpuUsage() });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.maxRequestsPerSocket = 0;
server.listen(0, '127.0.0.1');
await once(server, 'listening');
send({ type: 'ready', port: server.address().port, smallBytes: SMALL.length, bigBytes: BIG });
