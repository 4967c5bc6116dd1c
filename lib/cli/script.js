'use strict';

// A `--run` script's process, a child of the session daemon (./daemon.js):
// apart from the daemon, the script can neither take the session's signals
// nor block its shutdown. It reaches the browser the way connect() does
// (connectOverCDP) and imports the script with Playwright's `page`, `browser`
// and `context` as globals.
//
// stdin: one JSON line `{ script, cdpUrl }` (the absolute path, resolved from
// the caller's cwd). Its stdout and stderr become lines of the session's log;
// its TMPDIR is a folder the daemon removes. Exit code: 0 the script
// finished, 1 it threw (or could not run), 2 an uncaught exception, 3 an
// unhandled rejection.

const { pathToFileURL } = require('node:url');
const { loadPlaywright } = require('../playwright.js');

const log = (msg) => process.stderr.write(`${msg}\n`);

for (const [event, code] of [
  ['uncaughtException', 2],
  ['unhandledRejection', 3],
]) {
  process.on(event, (err) => {
    log(`error: ${err?.stack ?? err}`);
    process.exit(code);
  });
}

async function input() {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  return JSON.parse(text);
}

async function main() {
  const { script, cdpUrl } = await input();
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

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`error: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
