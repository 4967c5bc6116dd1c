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

module.exports = { loadPlaywright, targetIdOf, pageForTarget };
