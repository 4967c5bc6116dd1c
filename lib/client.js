'use strict';

const native = require('./native.js');
const { mapped } = require('./errors.js');
const { AluviaApi } = require('./api.js');
const { clientOptions } = require('./options.js');
const { createAdapters } = require('./adapters.js');
const { loadPlaywright, pageForTarget, closePagesSurely } = require('./playwright.js');

// blockDetection as the engine takes it: everything but the callback.
function detectionOptions(config) {
  if (config == null) return undefined;
  const { onDetection, ...rest } = config;
  if (onDetection !== undefined && typeof onDetection !== 'function') {
    throw new TypeError('blockDetection.onDetection must be a function');
  }
  return rest;
}

// AluviaClient: options are validated and everything runs in the native
// engine; this class only builds the Node-facing connection object.
class AluviaClient {
  constructor(options) {
    const o = clientOptions(options);
    this._native = mapped(
      () =>
        new native.BindingClient({ ...o, apiKey: o.apiKey ?? '', blockDetection: detectionOptions(o.blockDetection) }),
    );
    this._startPlaywright = Boolean(o.startPlaywright);
    this._onDetection = typeof o.blockDetection?.onDetection === 'function' ? o.blockDetection.onDetection : null;
    this._logLevel = o.logLevel ?? 'info';
    this._pwBrowser = null;
    this._lookups = null;
    if (this._startPlaywright) {
      this._native.setDetectionCallback((payload) => this._deliver(payload));
    }
    // AluviaApi keeps those of these options that are its own.
    this.api = new AluviaApi(o);
    this._connection = null;
    this._starting = null;
    this._keepAlive = null;
  }

  /** The account connection id, known after start(). */
  get connectionId() {
    return this._native.connectionId ?? undefined;
  }

  start() {
    if (this._connection) return Promise.resolve(this._connection);
    if (!this._starting) {
      this._starting = this._start().finally(() => {
        this._starting = null;
      });
    }
    return this._starting;
  }

  async _start() {
    const playwright = this._startPlaywright ? loadPlaywright() : null;
    if (this._startPlaywright && !playwright) {
      throw new Error('Playwright is required for startPlaywright. Install it: npm install playwright');
    }
    const info = await mapped(() => this._native.start());
    const { adapters, destroy } = createAdapters(info.url);
    const connection = {
      host: info.host,
      port: info.port,
      url: info.url,
      ...adapters,
      close: () => this._close(destroy),
      stop: () => this._close(destroy),
    };
    if (info.cdpUrl) {
      try {
        const browser = await playwright.chromium.connectOverCDP(info.cdpUrl);
        this._pwBrowser = browser;
        connection.browser = browser;
        connection.browserContext = browser.contexts()[0] ?? (await browser.newContext());
        closePagesSurely(browser);
        connection.cdpUrl = info.cdpUrl;
        connection.browserIsolation = info.browserIsolation;
        // Ours: which browser runs (`browser` is Playwright's Browser).
        connection.browserInfo = info.browser;
      } catch (err) {
        await mapped(() => this._native.closeBrowser());
        await mapped(() => this._native.stop());
        throw err;
      }
    }
    // A listening proxy keeps the process alive, as a Node server would.
    this._keepAlive = setInterval(() => {}, 2 ** 31 - 1);
    this._connection = connection;
    return connection;
  }

  async _close(destroyAdapters) {
    const browser = this._pwBrowser;
    this._pwBrowser = null;
    if (browser) await browser.close().catch(() => {});
    await mapped(() => this._native.closeBrowser());
    await destroyAdapters();
    await this.stop();
  }

  // A detection result from the engine: hand it to onDetection with the
  // Playwright page of its target, in the order the engine reported them
  // (each page lookup waits for the one before). A throwing callback is
  // logged, never fatal.
  async _deliver(payload) {
    if (!this._onDetection) return;
    let event;
    try {
      event = JSON.parse(payload);
    } catch {
      return;
    }
    const lookup = (this._lookups ?? Promise.resolve()).then(() => this._pageOf(event.targetId));
    this._lookups = lookup.catch(() => {});
    const page = await lookup;
    try {
      await this._onDetection(event.result, page);
    } catch (err) {
      if (this._logLevel !== 'silent') console.error(`[aluvia] onDetection threw: ${err?.stack ?? err}`);
    }
  }

  // The Playwright page of a CDP target; a result that comes while start()
  // connects Playwright waits for it.
  async _pageOf(targetId) {
    if (!this._pwBrowser) await this._starting?.catch(() => null);
    const browser = this._pwBrowser;
    return browser ? await pageForTarget(browser, targetId) : undefined;
  }

  /** Hostnames that stayed blocked even through the gateway. */
  getBlockedHostnames() {
    return this._native.blockedHostnames();
  }

  /** Forget persistently blocked hostnames and retried URLs. */
  clearBlockedHostnames() {
    this._native.clearBlockedHostnames();
  }

  /** Stop the proxy and config polling (and the browser of startPlaywright). */
  async stop() {
    if (this._starting) await this._starting.catch(() => {});
    this._connection = null;
    if (this._keepAlive) clearInterval(this._keepAlive);
    this._keepAlive = null;
    await mapped(() => this._native.stop());
  }

  updateRules(rules) {
    if (!Array.isArray(rules) || rules.some((r) => typeof r !== 'string')) {
      return Promise.reject(new TypeError('rules must be an array of strings'));
    }
    return mapped(() => this._native.updateRules(rules));
  }

  updateSessionId(sessionId) {
    if (typeof sessionId !== 'string') return Promise.reject(new TypeError('sessionId must be a string'));
    return mapped(() => this._native.updateSessionId(sessionId));
  }

  updateTargetGeo(geo) {
    if (geo != null && typeof geo !== 'string') return Promise.reject(new TypeError('geo must be a string or null'));
    return mapped(() => this._native.updateTargetGeo(geo ?? undefined));
  }

  /** Requests, tunnels and bytes carried by the local proxy, per hostname and route. */
  getTrafficStats() {
    return this._native.traffic();
  }
}

module.exports = { AluviaClient };
