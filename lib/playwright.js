'use strict';

// Playwright is an optional peer: `playwright` or `playwright-core`, whichever
// is installed.
function loadPlaywright() {
  for (const name of ['playwright', 'playwright-core']) {
    try {
      return require(name);
    } catch (err) {
      if (err?.code !== 'MODULE_NOT_FOUND' || !String(err.message).includes(`'${name}'`)) throw err;
    }
  }
  return null;
}

const targetIds = new WeakMap();

/** The CDP target id of a Playwright page (cached). */
async function targetIdOf(page) {
  if (targetIds.has(page)) return targetIds.get(page);
  const session = await page.context().newCDPSession(page);
  try {
    const { targetInfo } = await session.send('Target.getTargetInfo');
    targetIds.set(page, targetInfo.targetId);
    return targetInfo.targetId;
  } finally {
    await session.detach().catch(() => {});
  }
}

/** The Playwright page of a CDP target, waiting briefly for Playwright to learn of it. */
async function pageForTarget(browser, targetId, { attempts = 40, delayMs = 50 } = {}) {
  for (let i = 0; i < attempts; i++) {
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        if (page.isClosed()) continue;
        try {
          if ((await targetIdOf(page)) === targetId) return page;
        } catch {
          // The page went away while we asked.
        }
      }
    }
    if (!browser.isConnected()) return undefined;
    await new Promise((r) => setTimeout(r, delayMs));
  }
  return undefined;
}

// Chromium drops a Target.closeTarget that lands while a page is between
// two documents of its own making (a challenge page that reloads itself in a
// loop): Playwright's page.close() then waits for ever. So the close is sent
// again, from a browser-level session, while the page stays open, and the
// page's scripts are switched off (its next document cannot reload itself).
const CLOSE_AGAIN_MS = 50;
const browserSessions = new WeakMap();

function browserSession(browser) {
  if (!browserSessions.has(browser))
    browserSessions.set(
      browser,
      browser.newBrowserCDPSession().catch(() => null),
    );
  return browserSessions.get(browser);
}

/** page.close() that keeps closing a page that reloads itself. */
function closeSurely(browser, page) {
  const close = page.close.bind(page);
  page.close = async (options = {}) => {
    if (options.runBeforeUnload || page.isClosed()) return close(options);
    const targetId = await targetIdOf(page).catch(() => null);
    page
      .context()
      .newCDPSession(page)
      .then((s) => s.send('Emulation.setScriptExecutionDisabled', { value: true }))
      .catch(() => {});
    let timer = null;
    let stopped = false;
    const again = async () => {
      if (stopped || page.isClosed() || !targetId || !browser.isConnected()) return;
      await (await browserSession(browser))?.send('Target.closeTarget', { targetId }).catch(() => {});
      if (!stopped) timer = setTimeout(again, CLOSE_AGAIN_MS);
    };
    timer = setTimeout(again, CLOSE_AGAIN_MS);
    try {
      return await close(options);
    } finally {
      stopped = true;
      clearTimeout(timer);
    }
  };
}

/** Every page of `browser`'s contexts, now and later, closes surely. */
function closePagesSurely(browser) {
  for (const context of browser.contexts()) {
    for (const page of context.pages()) closeSurely(browser, page);
    context.on('page', (page) => closeSurely(browser, page));
  }
}

module.exports = { loadPlaywright, targetIdOf, pageForTarget, closePagesSurely };
