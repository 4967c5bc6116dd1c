'use strict';

// The background process of one CLI session, spawned by `session start` (fd 3
// is the ready pipe). Its stdout and stderr are the session's log file. Its
// whole life is the engine's (sessionDaemonRun: proxy, Chromium, detection,
// the lock file, the ready signal, SIGTERM/SIGINT, a `--run` script's child
// process, shutdown).
//
// What it runs comes on stdin, never on its command line (which every user
// sees in `ps`) nor in its environment: one JSON line `{ apiKey, spec }`
// (sessionDaemonSecret, which first makes this process non-dumpable). Never
// log the key.

const path = require('node:path');
const native = require('../native.js');
const { mapped } = require('../errors.js');
const { settings } = require('./commands.js');

// The `--run` script's process (./script.js). (The native `aluvia-daemon`
// is the usual daemon; this one runs where it is not built.)
const RUNNER = path.join(__dirname, 'script.js');

// One writer for the log: the engine's, so that lines never interleave.
const log = (msg) => native.sessionDaemonLog(String(msg));

async function main() {
  const { apiKey, spec } = JSON.parse(native.sessionDaemonSecret());
  // Without a key, settings() is `{ error }` and the client gets an empty key.
  // The engine takes the API and gateway addresses from the environment.
  const { apiKey: key = '' } = settings({ ...process.env, ALUVIA_API_KEY: apiKey ?? '' });
  // SIGTERM and SIGINT are the engine's (it stops the session gracefully);
  // it replaces these handlers as it starts, and until then they ask it to stop.
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => native.sessionDaemonStop(0, signal));
  for (const event of ['uncaughtException', 'unhandledRejection']) {
    process.on(event, (err) => {
      log(`error: ${err?.stack ?? err}`);
      native.sessionDaemonStop(1, event === 'uncaughtException' ? 'uncaught exception' : 'unhandled rejection');
    });
  }
  const code = await mapped(() =>
    native.sessionDaemonRun({
      name: spec.name,
      url: spec.url,
      headful: spec.headful,
      blockDetection: spec.blockDetection,
      autoUnblock: spec.autoUnblock,
      unblockSteps: spec.unblockSteps,
      unblockGeos: spec.unblockGeos,
      client: { apiKey: key, connectionId: spec.connectionId, browser: spec.browser },
      run: spec.run ? { program: process.execPath, args: [RUNNER], script: spec.run } : undefined,
      idleTimeoutMs: spec.idleTimeoutMs ?? undefined,
      profile: spec.profile,
      home: spec.home,
    }),
  );
  process.exit(code);
}

main().catch((err) => {
  // The engine did not run (its lock is left to stale cleanup).
  log(`error: ${err?.stack ?? err}`);
  process.exit(1);
});
