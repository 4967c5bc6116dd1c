// Shared test fixtures: real servers on loopback, nothing mocked.
import http from 'node:http';
import { once } from 'node:events';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const require = createRequire(import.meta.url);
export const sdk = require('../lib/index.js');
export const cliPath = join(root, 'bin', 'aluvia.js');

/** Start an HTTP server on 127.0.0.1 with `handler`; returns { url, port, server, close }. */
export async function serve(handler, host = '127.0.0.1') {
  const server = http.createServer(handler);
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address();
  return {
    server,
    port,
    host,
    url: `http://${host}:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** Listens with `server` (any node:http or node:https server) on 127.0.0.1; returns { port, close }. */
export async function listenLoopback(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A target that answers with the client address it saw, as JSON. */
export function whoami() {
  return serve((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          remoteAddress: req.socket.remoteAddress,
          method: req.method,
          url: req.url,
          headers: req.headers,
          body,
        }),
      );
    });
  });
}

/** A pass-through in front of `targetBase` that records every request it forwards. */
export async function recorder(targetBase) {
  const seen = [];
  const target = new URL(targetBase);
  const srv = await serve((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      const up = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (upRes) => {
          res.writeHead(upRes.statusCode, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', (e) => {
        res.writeHead(599);
        res.end(String(e));
      });
      up.end(body);
    });
  });
  const prefix = target.pathname.replace(/\/$/, '');
  return { ...srv, seen, baseUrl: `${srv.url}${prefix}` };
}

export async function withEmulator(fn, opts = {}) {
  const emu = await sdk.startEmulator(opts);
  try {
    return await fn(emu);
  } finally {
    await emu.stop();
  }
}

export async function admin(emu, method, path, body) {
  const base = emu.apiBaseUrl.replace(/\/v1$/, '');
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${emu.apiKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Run `node <argv…>` to completion; resolves { code, stdout, stderr }. */
export function runNode(argv, { env = {}, cwd = root, timeoutMs = 90_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node ${argv[0]} timed out; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Run the CLI to completion; resolves { code, stdout, stderr, json }. */
export async function runCli(args, opts) {
  const r = await runNode([cliPath, ...args], opts);
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

/** Send a raw request to a proxy and return { status, headers, body }. */
export function viaProxy(proxyUrl, targetUrl, { method = 'GET', headers = {}, body } = {}) {
  const p = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: p.hostname,
        port: p.port,
        method,
        path: targetUrl,
        headers: { host: new URL(targetUrl).host, ...headers },
      },
      (res) => {
        let data = '';
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Open a CONNECT tunnel through a proxy and GET `path` over it. */
export function viaTunnel(proxyUrl, targetHostPort, path = '/', connectHeaders = {}) {
  const p = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: p.hostname,
      port: p.port,
      method: 'CONNECT',
      path: targetHostPort,
      headers: { host: targetHostPort, ...connectHeaders },
    });
    req.on('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        resolve({ status: res.statusCode, connectStatus: res.statusCode, body: '' });
        return;
      }
      const inner = http.request(
        { createConnection: () => socket, method: 'GET', path, headers: { host: targetHostPort, connection: 'close' } },
        (r) => {
          let data = '';
          r.on('data', (c) => (data += c));
          r.on('end', () => {
            socket.destroy();
            resolve({ status: r.statusCode, connectStatus: 200, body: data });
          });
        },
      );
      inner.on('error', reject);
      inner.end();
    });
    req.on('response', (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, connectStatus: res.statusCode, body: data }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** AluviaClient options pointing at an emulator, quiet by default. */
export function emulatorClientOptions(emu, extra = {}) {
  return {
    apiKey: emu.apiKey,
    apiBaseUrl: emu.apiBaseUrl,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    logLevel: 'silent',
    ...extra,
  };
}

/** Poll `check` until it returns something truthy (which is returned), or fail after `timeoutMs`. */
export async function eventually(check, { timeoutMs = 15_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Points TMPDIR at a fresh private folder (Chromium profiles and the rules
 * lock live under it); `restore()` puts TMPDIR back and removes the folder.
 */
export function privateTmpdir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const outer = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return {
    dir,
    restore() {
      if (outer === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = outer;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A throwaway local user for the multi-user tests: `{ name, uid, remove }`,
 * or `{ skip }` with the reason when one cannot be made here.
 */
export function throwawayUser(tools = []) {
  if (process.getuid?.() !== 0) return { skip: 'needs root to create a throwaway user' };
  const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
  const needed = ['useradd', 'userdel', 'runuser', ...tools];
  if (!needed.every(has)) return { skip: `needs ${needed.join(', ')}` };
  const name = `aluvia-t${process.pid}`;
  const made = spawnSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', name]);
  if (made.status !== 0) return { skip: `useradd failed: ${made.stderr}` };
  const uid = Number(spawnSync('id', ['-u', name], { encoding: 'utf8' }).stdout.trim());
  return { name, uid, remove: () => spawnSync('userdel', [name]) };
}

/**
 * Runs `argv` (a command and its arguments) as local user `user` with `env`
 * added; resolves its stdout parsed as JSON, rejects with its output when
 * that is not JSON.
 */
export function jsonAs(user, argv, env = {}) {
  return new Promise((resolve, reject) => {
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    execFile(
      'runuser',
      ['-u', user, '--', 'env', ...envArgs, ...argv],
      { cwd: '/', timeout: 120_000 },
      (err, stdout, stderr) => {
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(
            new Error(`${argv.slice(0, 2).join(' ')} as ${user} failed: ${err?.message ?? ''}\n${stdout}\n${stderr}`),
          );
        }
      },
    );
  });
}

/** A loopback port that nothing listens on (it was free a moment ago). */
export async function closedPort() {
  const server = http.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A self-signed certificate for `localhost` and 127.0.0.1 made in a new
 * folder under `parent`: `{ key, cert, spki }` (PEM, PEM, and the
 * certificate's public-key pin for `trustSpki`).
 */
export function localhostCertificate(parent) {
  const dir = mkdtempSync(join(parent, 'cert-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
  const spkiDer = new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' });
  return {
    key: readFileSync(join(dir, 'key.pem')),
    cert,
    spki: createHash('sha256').update(spkiDer).digest('base64'),
  };
}
