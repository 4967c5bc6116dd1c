// The proxy against real clients and servers on loopback: WebSockets (Node's
// http agents in absolute form, Chromium through a tunnel), traffic figures
// held against the bytes the origin and the emulator's gateway really
// carried, self-loops, and another local user.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sdk, emulatorClientOptions, admin, require, throwawayUser } from './helpers.mjs';

const { AluviaClient } = sdk;
const { emulatorExitAddress } = require('../lib/emulator.js');

let emu;
const privateTmp = mkdtempSync(join(tmpdir(), 'aluvia-wire-'));
const outerTmp = process.env.TMPDIR;
process.env.TMPDIR = privateTmp;

before(async () => {
  emu = await sdk.startEmulator({ site: false });
});

after(async () => {
  await emu?.stop();
  if (outerTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outerTmp;
  rmSync(privateTmp, { recursive: true, force: true });
});

async function listen(server, host = '127.0.0.1') {
  server.listen(0, host);
  await once(server, 'listening');
  return server.address().port;
}

function closeServer(server) {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    for (const s of server.upgraded ?? []) s.destroy();
    server.close(() => resolve());
  });
}

async function withClient(extra, fn) {
  const client = new AluviaClient(emulatorClientOptions(emu, extra));
  const connection = await client.start();
  try {
    return await fn({ client, connection });
  } finally {
    await connection.close();
  }
}

/**
 * A minimal WebSocket echo server (RFC 6455: the handshake, and short
 * frames): each text message comes back as `<peer> <message>`.
 */
function webSocketServer() {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.upgraded = new Set();
  server.on('upgrade', (req, socket) => {
    server.upgraded.add(socket);
    socket.on('end', () => socket.end());
    socket.on('close', () => server.upgraded.delete(socket));
    const accept = createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 6) {
        const opcode = buf[0] & 0x0f;
        const len = buf[1] & 0x7f;
        if (len > 125 || buf.length < 6 + len) return;
        const mask = buf.subarray(2, 6);
        const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
        buf = buf.subarray(6 + len);
        if (opcode === 0x8) return socket.end();
        const reply = Buffer.from(`${socket.remoteAddress} ${payload}`);
        socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]));
      }
    });
    socket.on('error', () => {});
  });
  return server;
}

/** A WebSocket handshake and one message through `agent` (absolute form, as `ws` does). */
function webSocketViaAgent(url, agent, message) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      agent,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version': '13',
      },
    });
    req.on('upgrade', (res, socket, head) => {
      let got = head;
      const mask = Buffer.from([1, 2, 3, 4]);
      const payload = Buffer.from(message).map((b, i) => b ^ mask[i % 4]);
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | message.length]), mask, payload]));
      socket.on('data', (chunk) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 2 && got.length >= 2 + got[1]) {
          socket.destroy();
          resolve({ status: res.statusCode, text: got.subarray(2, 2 + got[1]).toString() });
        }
      });
    });
    req.on('response', (res) => reject(new Error(`no upgrade: HTTP ${res.statusCode}`)));
    req.on('error', reject);
    req.end();
  });
}

test('WebSockets: Node agents in absolute form, direct and through the gateway; Chromium through a tunnel', async () => {
  const server = webSocketServer();
  const port = await listen(server);
  try {
    await withClient({}, async ({ client, connection }) => {
      const { http: agent } = connection.asNodeAgents();
      const direct = await webSocketViaAgent(`http://127.0.0.1:${port}/chat`, agent, 'hello');
      assert.deepEqual(direct, { status: 101, text: '127.0.0.1 hello' });
      let stats = client.getTrafficStats().find((t) => t.hostname === '127.0.0.1' && t.route === 'direct');
      assert.equal(stats.tunnels, 1, 'an upgraded connection counts as a tunnel');

      await client.updateRules(['127.0.0.1']);
      const conn = await client.api.account.connections.get(client.connectionId);
      const proxied = await webSocketViaAgent(`http://127.0.0.1:${port}/chat`, agent, 'again');
      assert.deepEqual(proxied, {
        status: 101,
        text: `${emulatorExitAddress(conn.session_id, conn.target_geo)} again`,
      });
      stats = client.getTrafficStats().find((t) => t.hostname === '127.0.0.1' && t.route === 'gateway');
      assert.equal(stats.tunnels, 1);
      assert.ok(stats.bytesSent > 0 && stats.bytesReceived > 0);
    });

    await withClient({ startPlaywright: true, blockDetection: { enabled: false } }, async ({ connection }) => {
      const page = await connection.browserContext.newPage();
      const text = await page.evaluate(
        (url) =>
          new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            ws.onopen = () => ws.send('from chromium');
            ws.onmessage = (e) => {
              resolve(e.data);
              ws.close();
            };
            ws.onerror = () => reject(new Error('websocket failed'));
          }),
        `ws://127.0.0.1:${port}/chat`,
      );
      assert.equal(text, '127.0.0.1 from chromium');
    });
  } finally {
    await closeServer(server);
  }
});

test('traffic figures are wire bytes: equal to what the origin read and wrote, close to what the gateway billed', async () => {
  // The origin counts every byte on its sockets.
  const sockets = new Set();
  const origin = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'text/plain');
      if (req.url.startsWith('/chunked')) {
        res.write('x'.repeat(1000));
        res.end('y'.repeat(2345));
      } else {
        res.end('z'.repeat(777));
      }
    });
  });
  origin.on('connection', (s) => sockets.add(s));
  const port = await listen(origin, '127.0.0.5');
  const atOrigin = () => [...sockets].reduce((a, s) => [a[0] + s.bytesRead, a[1] + s.bytesWritten], [0, 0]);
  try {
    await withClient({}, async ({ client, connection }) => {
      // Node's http agent sends absolute-form requests: forwarded, not tunnelled.
      const { http: agent } = connection.asNodeAgents();
      const request = (path, body) =>
        new Promise((resolve, reject) => {
          const req = http.request(
            `http://127.0.0.5:${port}${path}`,
            { agent, method: body ? 'POST' : 'GET' },
            (res) => {
              let text = '';
              res.on('data', (c) => (text += c));
              res.on('end', () => resolve(text));
            },
          );
          req.on('error', reject);
          req.end(body);
        });
      const drive = async () => {
        assert.equal((await request('/plain')).length, 777);
        assert.equal((await request('/post', 'b'.repeat(4096))).length, 777);
        assert.equal((await request('/chunked?q=1')).length, 3345);
      };
      await drive();
      const [read, written] = atOrigin();
      const direct = client.getTrafficStats().find((t) => t.hostname === '127.0.0.5' && t.route === 'direct');
      assert.deepEqual(
        [direct.requests, direct.bytesSent, direct.bytesReceived],
        [3, read, written],
        'the direct route counts exactly what crossed the origin’s wire',
      );

      // Through the gateway: the emulator bills what it carried to and from
      // the origin; ours adds only the proxy hop's own request head
      // (absolute URI, Proxy-Authorization) and the gateway's re-framing.
      await client.updateRules(['127.0.0.5']);
      sockets.clear();
      await drive();
      const gateway = client.getTrafficStats().find((t) => t.hostname === '127.0.0.5' && t.route === 'gateway');
      const { body } = await admin(emu, 'GET', '/_emulator/traffic');
      const billed = body.connections
        .find((c) => String(c.connection_id) === String(client.connectionId))
        .hosts.find((h) => h.host === '127.0.0.5');
      const [read2, written2] = atOrigin();
      assert.deepEqual([billed.bytes_up, billed.bytes_down], [read2, written2], 'the emulator bills the origin’s wire');
      const extraUp = gateway.bytesSent - billed.bytes_up;
      const extraDown = gateway.bytesReceived - billed.bytes_down;
      assert.ok(extraUp > 0 && extraUp <= 3 * 200, `request heads to the gateway add ${extraUp} bytes`);
      assert.ok(Math.abs(extraDown) <= 3 * 200, `responses differ by ${extraDown} bytes`);
    });
  } finally {
    await closeServer(origin);
  }
});

const openFds = () => readdirSync('/proc/self/fd').length;

test('a request or tunnel aimed at the proxy itself is a 400, and descriptors do not grow', async () => {
  await withClient({}, async ({ connection }) => {
    const port = connection.port;
    const before = openFds();
    for (const host of ['127.0.0.1', '127.1', '2130706433', '0.0.0.0', 'localhost', '[::ffff:127.0.0.1]']) {
      const status = await new Promise((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1',
          port,
          path: `http://${host}:${port}/`,
          headers: { host: `${host}:${port}` },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode);
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 400, host);
      const answer = await new Promise((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () =>
          s.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`),
        );
        let got = '';
        s.on('data', (c) => {
          got += c;
          if (got.includes('\r\n\r\n')) {
            s.destroy();
            resolve(got);
          }
        });
        s.on('error', reject);
      });
      assert.match(answer, /^HTTP\/1\.1 400/, host);
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(openFds() <= before + 8, `descriptors grew from ${before} to ${openFds()}`);
  });
});

test('another local user cannot use the proxy; the owner can', async (t) => {
  const user = throwawayUser(['curl']);
  if (user.skip) return t.skip(user.skip);
  const hits = [];
  const target = http.createServer((req, res) => {
    hits.push(req.socket.remotePort);
    res.end('target');
  });
  const port = await listen(target);
  try {
    await withClient({}, async ({ connection }) => {
      // Not spawnSync: the target runs in this process's event loop.
      const curl = (asUser) =>
        new Promise((resolve) => {
          const args = [...(asUser ? ['-u', user.name, '--', 'curl'] : []), '-s', '-m', '10', '-x', connection.url];
          execFile(asUser ? 'runuser' : 'curl', [...args, `http://127.0.0.1:${port}/`], (err, stdout, stderr) =>
            resolve({ status: err ? err.code : 0, stdout, stderr }),
          );
        });
      const other = await curl(true);
      // 52: an empty reply; 56: the connection was reset (closed unread).
      assert.ok([52, 56].includes(other.status), `curl as another user: exit ${other.status} ${other.stderr}`);
      assert.equal(other.stdout, '');
      assert.equal(hits.length, 0, 'nothing reached the target');
      const owner = await curl(false);
      assert.equal(owner.status, 0, owner.stderr);
      assert.equal(owner.stdout, 'target');
    });
  } finally {
    user.remove();
    await closeServer(target);
  }
});
