'use strict';

// The background process of one CLI session, spawned by `session start`
// (argv[2] is its JSON spec; fd 3 is the ready pipe). Its stdout and stderr
// are the session's log file. Its whole life is the engine's
// (sessionDaemonRun: proxy, Chromium, detection, the lock file, the ready
// signal, SIGTERM/SIGINT, shutdown); what stays here needs JavaScript: the
// `--run` script, imported with Playwright's `page`, `browser` and `context`
// as globals, and JavaScript errors that escape it.
//
// The API key comes on stdin (sessionDaemonSecret, which first makes this
// process non-dumpable), never from the environment: never log it.

const { pathToFileURL } = require('node:url');
const native = require('../native.js');
const { mapped } = require('../errors.js');
const { settings } = require('./commands.js');

// One writer for the log: the engine's, so that lines never interleave.
const log = (msg) => native.sessionDaemonLog(String(msg));

async function main() {
  const apiKey = native.sessionDaemonSecret();
  const spec = JSON.parse(process.argv[2]);
  // Without a key, settings() is `{ error }` and the client gets an empty key.
  // The engine takes the API and gateway addresses from the environment.
  const { apiKey: key = '' } = settings({ ...process.env, ALUVIA_API_KEY: apiKey });
  // SIGTERM and SIGINT are the engine's (it stops the session gracefully).
  // Listening here first keeps a --run script from taking them over: Node
  // installs its handler for a signal once, with the first listener, and the
  // engine replaces that handler with its own as it starts.
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => native.sessionDaemonStop(0, signal));
  for (const event of ['uncaughtException', 'unhandledRejection']) {
    process.on(event, (err) => {
      log(`error: ${err?.stack ?? err}`);
      native.sessionDaemonStop(1, event === 'uncaughtException' ? 'uncaught exception' : 'unhandled rejection');
    });
  }
  const code = await mapped(() =>
    native.sessionDaemonRun(
      {
        name: spec.name,
        url: spec.url,
        headful: spec.headful,
        blockDetection: spec.blockDetection,
        autoUnblock: spec.autoUnblock,
        client: { apiKey: key, connectionId: spec.connectionId },
      },
      spec.run ? (cdpUrl) => runScript(spec.run, cdpUrl) : undefined,
    ),
  );
  process.exit(code);
}

/** Imports the script with `page`, `browser` and `context` as globals; its exit code. */
async function runScript(script, cdpUrl) {
  const { loadPlaywright } = require('../playwright.js');
  const playwright = loadPlaywright();
  if (!playwright) {
    log('error: Playwright is required for --run. Install it: npm install playwright');
    return 1;
  }
  let browser;
  try {
    browser = await playwright.chromium.connectOverCDP(cdpUrl);
    const context = browser.contexts()[0] ?? (await browser.newContext());
    const page = context.pages()[0] ?? (await context.newPage());
    Object.assign(globalThis, { page, browser, context });
    log(`running ${script}`);
    await import(pathToFileURL(script).href);
    log('script finished');
    return 0;
  } catch (err) {
    log(`script failed: ${err?.stack ?? err}`);
    return 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

main().catch((err) => {
  // The engine did not run (its lock is left to stale cleanup).
  log(`error: ${err?.stack ?? err}`);
  process.exit(1);
});
