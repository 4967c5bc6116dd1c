// Cleanup registry and child-process helpers shared by every bench section.
//
// Everything a section starts (servers, clients, the emulator, child
// processes) is registered here with `defer(fn)`; `closeAll()` runs the
// closers in reverse order, each bounded in time, and never throws.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const benchDir = join(dirname(fileURLToPath(import.meta.url)), '..');

const withTimeout = (p, ms, what) =>
  Promise.race([
    Promise.resolve(p),
    new Promise((_, reject) => {
      const t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
      t.unref();
    }),
  ]);

export class Resources {
  constructor() {
    this._closers = [];
  }

  /** Register `fn` (sync or async) to run at `closeAll()`. Returns `fn`. */
  defer(label, fn) {
    const entry = { label, fn };
    this._closers.push(entry);
    return () => {
      const i = this._closers.indexOf(entry);
      if (i >= 0) this._closers.splice(i, 1);
      return fn();
    };
  }

  async closeAll() {
    const errors = [];
    while (this._closers.length) {
      const { label, fn } = this._closers.pop();
      try {
        await withTimeout(fn(), 5000, label);
      } catch (err) {
        errors.push(`${label}: ${err?.message ?? err}`);
      }
    }
    return errors;
  }
}

/**
 * Fork `benches/lib/<script>` with a JSON config in argv. The child talks over
 * IPC ({ type, ... } messages) and exits by itself when the IPC channel drops,
 * so it cannot outlive the bench. The returned handle's `stop()` is registered
 * with `res` (SIGTERM, then SIGKILL after 2 s).
 */
export function startChild(res, script, config = {}, { label = script } = {}) {
  const child = fork(join(benchDir, 'lib', script), [JSON.stringify(config)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [],
  });
  const queue = [];
  const waiters = [];
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      for (const w of waiters.splice(0))
        w.reject(new Error(`${label} exited (code ${code}, signal ${signal}) before answering`));
      resolve(exited);
    });
  });
  child.on('message', (msg) => {
    if (msg?.type === 'error') {
      const err = new Error(`${label}: ${msg.message}`);
      const w = waiters.shift();
      if (w) w.reject(err);
      else queue.push({ error: err });
      return;
    }
    const w = waiters.shift();
    if (w) w.resolve(msg);
    else queue.push({ msg });
  });
  child.on('error', () => {});

  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exitPromise;
    clearTimeout(killer);
  };
  const unregister = res.defer(`child ${label}`, stop);

  /** The next message from the child (rejects on a child error, exit, or timeout). */
  const next = (timeoutMs = 30_000) => {
    const q = queue.shift();
    if (q) return q.error ? Promise.reject(q.error) : Promise.resolve(q.msg);
    if (exited) return Promise.reject(new Error(`${label} already exited (code ${exited.code})`));
    return withTimeout(
      new Promise((resolve, reject) => waiters.push({ resolve, reject })),
      timeoutMs,
      `${label} reply`,
    );
  };
  const send = (msg) => child.send(msg);
  return { child, next, send, stop: unregister, exited: exitPromise };
}

/** For use inside a child: parse the config, and die with the parent. */
export function childSetup() {
  const config = JSON.parse(process.argv[2] ?? '{}');
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  const fail = (err) => {
    try {
      process.send?.({ type: 'error', message: String(err?.stack ?? err) });
    } finally {
      setTimeout(() => process.exit(1), 50);
    }
  };
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  return { config, send: (msg) => process.send(msg), fail };
}
