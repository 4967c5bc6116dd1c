'use strict';

const native = require('./native.js');
const { mapped } = require('./errors.js');
const { AluviaApi } = require('./api.js');
const { createAdapters } = require('./adapters.js');

// AluviaClient: options are validated and everything runs in the native
// engine; this class only builds the Node-facing connection object.
class AluviaClient {
  constructor(options) {
    const o = options ?? {};
    if (o.startPlaywright) {
      throw new Error('startPlaywright is not available in this version of @aluvia/sdk');
    }
    this._native = mapped(
      () =>
        new native.BindingClient({
          apiKey: o.apiKey == null ? '' : String(o.apiKey),
          connectionId: o.connectionId,
          strict: o.strict,
          apiBaseUrl: o.apiBaseUrl,
          pollIntervalMs: o.pollIntervalMs,
          timeoutMs: o.timeoutMs,
          gatewayProtocol: o.gatewayProtocol,
          gatewayPort: o.gatewayPort,
          gatewayHost: o.gatewayHost,
          localPort: o.localPort,
          logLevel: o.logLevel,
        }),
    );
    this.api = new AluviaApi({ apiKey: o.apiKey, apiBaseUrl: o.apiBaseUrl, timeoutMs: o.timeoutMs });
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
    // A listening proxy keeps the process alive, as a Node server would.
    this._keepAlive = setInterval(() => {}, 2 ** 31 - 1);
    this._connection = connection;
    return connection;
  }

  async _close(destroyAdapters) {
    await destroyAdapters();
    await this.stop();
  }

  /** Stop the proxy and config polling. */
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
