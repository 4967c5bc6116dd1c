// Child process: download GET /big once, direct or through a proxy's CONNECT
// tunnel, on a raw socket (no HTTP parsing on the client side: bytes are
// counted until the server closes). Timed from the TCP connect (before the
// CONNECT handshake, if any) to the last byte.
import net from 'node:net';
import { childSetup } from './resources.mjs';

const { config, send, fail } = childSetup();
const { targetPort, proxyPort = null, expectBodyBytes } = config;
const target = `127.0.0.1:${targetPort}`;
const now = () => Number(process.hrtime.bigint()) / 1e6;

const t0 = now();
const sock = net.connect({ host: '127.0.0.1', port: proxyPort ?? targetPort });
sock.setNoDelay(true);
const get = `GET /big HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`;

let total = 0;
let headerBytes = -1;
let head = Buffer.alloc(0);
const onBody = (chunk) => {
  total += chunk.length;
  if (headerBytes < 0) {
    head = Buffer.concat([head, chunk]);
    const i = head.indexOf('\r\n\r\n');
    if (i >= 0) {
      headerBytes = i + 4;
      const status = head.subarray(0, head.indexOf('\r\n')).toString();
      if (!/^HTTP\/1\.1 200/.test(status)) fail(new Error(`unexpected response: ${status}`));
      head = null;
    }
  }
};

if (proxyPort) {
  sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  const onConnectReply = (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const i = buf.indexOf('\r\n\r\n');
    if (i < 0) return;
    sock.off('data', onConnectReply);
    const status = buf.subarray(0, buf.indexOf('\r\n')).toString();
    if (!/^HTTP\/1\.[01] 200/.test(status)) return fail(new Error(`CONNECT refused: ${status}`));
    const rest = buf.subarray(i + 4);
    sock.on('data', onBody);
    if (rest.length) onBody(rest);
    sock.write(get);
  };
  sock.on('data', onConnectReply);
} else {
  sock.on('data', onBody);
  sock.write(get);
}
sock.on('error', fail);
sock.on('close', () => {
  const t1 = now();
  const body = total - Math.max(headerBytes, 0);
  if (body !== expectBodyBytes) return fail(new Error(`got ${body} body bytes, expected ${expectBodyBytes}`));
  const ms = t1 - t0;
  send({ type: 'result', bodyBytes: body, ms, mbPerS: body / 1e6 / (ms / 1000) });
  setTimeout(() => process.exit(0), 20);
});
