'use strict';

// The background process of one CLI session, spawned by `session start`
// (argv[2] is its JSON spec; fd 3 is the ready pipe). Its stdout and stderr
// are the session's log file. It runs the engine with startPlaywright
// semantics (proxy, Chromium, detection) without loading Playwright, keeps
// its lock file current, and stays until SIGTERM/SIGINT or until the browser
// goes away; with `run` it imports that script instead, then exits.
//
// The environment holds the API key: never log it.

const { pathToFileURL } = require('node:url');
const native = require('../native.js');
const { mapped } = require('../errors.js');
const { settings } = require('./commands.js');

/** The daemon's client polls its connection's config this often (ms), so
 * `rotate-ip`, `set-geo` and `set-rules` reach it within about a second. */
const POLL_INTERVAL_MS = 1000;

function log(msg) {
  process.stderr.write(`[aluvia] ${new Date().toISOString()} ${msg}\n`);
}

async function main() {
  try {
    native.daemonPrepareReadyFd();
  } catch (err) {
    log(`warning: ${err.message}`);
  }
  const spec = JSON.parse(process.argv[2]);
  const { name } = spec;
  const s = settings(process.env);
  if (s.error) throw new Error(s.error);
  log(`starting session '${name}' (pid ${process.pid}) for ${spec.url}`);

  const client = mapped(
    () =>
      new native.BindingClient({
        apiKey: s.apiKey,
        apiBaseUrl: s.apiBaseUrl,
        gatewayHost: s.gatewayHost,
        gatewayPort: s.gatewayPort,
        gatewayProtocol: s.gatewayProtocol,
        connectionId: spec.connectionId,
        pollIntervalMs: POLL_INTERVAL_MS,
        startPlaywright: true,
        headless: !spec.headful,
        blockDetection: { enabled: spec.blockDetection, autoUnblock: spec.autoUnblock },
      }),
  );
  await mapped(() => client.syncSessionLock(name));

  const keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  let cleaning = null;
  const shutdown = (code, why) => {
    if (!cleaning) {
      cleaning = (async () => {
        log(`stopping (${why})`);
        await client.closeBrowser().catch(() => {});
        await client.stop().catch(() => {});
        try {
          native.sessionRemoveSync(name, process.pid);
        } catch (err) {
          log(`could not remove the lock file: ${err.message}`);
        }
        clearInterval(keepAlive);
        log(`stopped, exit ${code}`);
        process.exit(code);
      })();
    }
    return cleaning;
  };
  process.on('SIGTERM', () => shutdown(0, 'SIGTERM'));
  process.on('SIGINT', () => shutdown(0, 'SIGINT'));
  process.on('uncaughtException', (err) => {
    log(`error: ${err?.stack ?? err}`);
    shutdown(1, 'uncaught exception');
  });
  process.on('unhandledRejection', (err) => {
    log(`error: ${err?.stack ?? err}`);
    shutdown(1, 'unhandled rejection');
  });

  // A lock that is gone or names another process is no longer this session's.
  const ownLock = async (patch) => {
    if (!(await mapped(() => native.sessionUpdate(name, patch)))) {
      throw new Error(`the lock file of session '${name}' was removed or taken over`);
    }
  };
  let info;
  try {
    info = await mapped(() => client.start());
    // Early write: the proxy is up (no `ready` yet).
    // `profileDir` (ours) lets stale cleanup remove the profile of a killed daemon.
    await ownLock({ proxyUrl: info.url, profileDir: client.browserProfileDir ?? null });
    try {
      await mapped(() => client.gotoFirst(spec.url));
    } catch (err) {
      // The session stays usable: a page that failed to load is the user's to handle.
      log(`navigation to ${spec.url} failed: ${err.message}`);
    }
    await ownLock({ connectionId: client.connectionId ?? null, cdpUrl: info.cdpUrl, url: spec.url, ready: true });
  } catch (err) {
    if (cleaning) return;
    log(`failed to start: ${err.message}`);
    await shutdown(1, 'start failed');
    return;
  }
  // Stopped while starting: never report ready.
  if (cleaning) return;
  native.daemonSignalReady();
  log(`ready: cdp ${info.cdpUrl}, proxy ${info.url}, connection ${client.connectionId ?? 'none'}`);

  if (spec.run) {
    await shutdown(await runScript(spec.run, info.cdpUrl), 'script finished');
    return;
  }
  await client.waitBrowserDisconnected();
  await shutdown(0, 'browser disconnected');
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
  log(`error: ${err?.stack ?? err}`);
  try {
    const name = JSON.parse(process.argv[2]).name;
    native.sessionRemoveSync(name, process.pid);
  } catch {
    // Nothing more to do.
  }
  process.exit(1);
});
