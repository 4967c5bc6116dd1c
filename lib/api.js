'use strict';

const native = require('./native.js');
const { ApiError, mapped, fromNative } = require('./errors.js');
const { apiOptions } = require('./options.js');

const TOO_LARGE = Symbol('body too large');

// The Aluvia REST client. Requests are built, sent and interpreted by the
// native engine; with a custom `fetch`, only the sending happens here.
class AluviaApi {
  constructor(options = {}) {
    const { apiKey = '', apiBaseUrl, timeoutMs, fetch } = apiOptions(options);
    this._native = mapped(() => new native.BindingApi(apiKey, apiBaseUrl, timeoutMs));
    this._fetch = fetch;

    const call = (spec) => this._send(spec, true);
    this.account = {
      get: () => call({ kind: 'account.get' }),
      usage: {
        get: (params = {}) => call({ kind: 'account.usage.get', start: params?.start, end: params?.end }),
      },
      payments: {
        list: (params = {}) => call({ kind: 'account.payments.list', start: params?.start, end: params?.end }),
      },
      connections: {
        list: () => call({ kind: 'account.connections.list' }),
        create: (body) => call({ kind: 'account.connections.create', body }),
        get: (connectionId, opts = {}) => call({ kind: 'account.connections.get', id: connectionId, etag: opts?.etag }),
        patch: (connectionId, body) => call({ kind: 'account.connections.patch', id: connectionId, body }),
        delete: (connectionId) => call({ kind: 'account.connections.delete', id: connectionId }),
      },
    };
    this.geos = {
      list: () => call({ kind: 'geos.list' }),
    };
  }

  /** The raw escape hatch: `{ status, etag, body }`, never throws on status. */
  request(args) {
    return this._send(args ?? {}, false);
  }

  // A fetch answer's body as text, read chunk by chunk and given up past the
  // engine's limit (TOO_LARGE) rather than held whole.
  async _readText(res) {
    const limit = this._native.maxBodyBytes;
    const reader = res.body && typeof res.body.getReader === 'function' ? res.body.getReader() : null;
    if (!reader) {
      const text = typeof res.text === 'function' ? await res.text() : '';
      if (Buffer.byteLength(text ?? '') > limit) throw TOO_LARGE;
      return text;
    }
    const chunks = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        throw TOO_LARGE;
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async _send(spec, isCall) {
    if (!this._fetch) {
      return mapped(() => (isCall ? this._native.call(spec) : this._native.request(spec)));
    }
    const req = mapped(() => this._native.prepare(spec, isCall));
    const timeoutMs = this._native.timeoutMs;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let status;
    let headers;
    let text;
    try {
      const res = await this._fetch(req.url, {
        method: req.method,
        headers: Object.fromEntries(req.headers),
        body: req.body ?? undefined,
        signal: controller.signal,
      });
      status = res.status;
      headers = res.headers;
      text = await this._readText(res);
    } catch (err) {
      if (err === TOO_LARGE) throw fromNative(this._native.bodyTooLarge(status));
      if (controller.signal.aborted) throw new ApiError(`Request timed out after ${timeoutMs}ms`, 408);
      throw new ApiError(`API request failed: ${err?.message ?? String(err)}`);
    } finally {
      clearTimeout(timer);
    }
    const header = (name) => (headers && typeof headers.get === 'function' ? headers.get(name) : null) ?? undefined;
    return mapped(() =>
      this._native.interpret(status, header('content-type'), header('etag'), text ?? '', isCall ? spec : undefined),
    );
  }
}

module.exports = { AluviaApi };
