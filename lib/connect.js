'use strict';

// connect(): Playwright objects for a running CLI session. Which session, and
// every check with its message, is the engine's (sessionResolve 'connect');
// this only connects over CDP.

const native = require('./native.js');
const { mapped, ConnectError } = require('./errors.js');
const { loadPlaywright, closePagesSurely } = require('./playwright.js');

// Playwright's messages carry a multi-line call log with terminal colours.
const reason = (err) => native.sanitizeMessage(String(err?.message ?? err));

/**
 * Connect to a running session (`aluvia session start`) by name, or to the
 * only one running. `disconnect()` closes this CDP connection only; the
 * session keeps running.
 */
async function connect(sessionName) {
  const playwright = loadPlaywright();
  if (!playwright) throw new ConnectError('Playwright is required for connect(). Install it: npm install playwright');
  const lock = await mapped(() => native.sessionResolve(sessionName ?? null, 'connect'));
  const name = lock.session;
  const cdpUrl = lock.cdpUrl;
  let browser;
  try {
    browser = await playwright.chromium.connectOverCDP(cdpUrl);
  } catch (err) {
    throw new ConnectError(`Failed to connect to session '${name}' at ${cdpUrl}: ${reason(err)}`);
  }
  let context;
  let page;
  try {
    context = browser.contexts()[0] ?? (await browser.newContext());
    closePagesSurely(browser);
    page = context.pages()[0] ?? (await context.newPage());
  } catch (err) {
    await browser.close().catch(() => {});
    throw new ConnectError(`Connected but failed to get page: ${reason(err)}`);
  }
  // For a connectOverCDP browser, close() drops the connection and leaves
  // the browser (the session's) running.
  const disconnect = () => browser.close().catch(() => {});
  return {
    browser,
    context,
    page,
    sessionName: name,
    cdpUrl,
    connectionId: lock.connectionId ?? undefined,
    disconnect,
  };
}

module.exports = { connect };
