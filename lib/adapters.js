'use strict';

// Adapters that hand the local proxy to popular HTTP clients. Node objects
// (agents, dispatchers) are created on first use, cached, and destroyed when
// the connection closes.

function createAdapters(url) {
  const cache = {};
  const once = (key, make) => {
    if (!(key in cache)) cache[key] = make();
    return cache[key];
  };

  const adapters = {
    asPlaywright: () => ({ server: url }),
    asPuppeteer: () => [`--proxy-server=${url}`],
    asSelenium: () => `--proxy-server=${url}`,
    asNodeAgents: () =>
      once('agents', () => {
        const { HttpProxyAgent } = require('http-proxy-agent');
        const { HttpsProxyAgent } = require('https-proxy-agent');
        return { http: new HttpProxyAgent(url), https: new HttpsProxyAgent(url) };
      }),
    asAxiosConfig: () => {
      const { http, https } = adapters.asNodeAgents();
      return { proxy: false, httpAgent: http, httpsAgent: https };
    },
    asGotOptions: () => {
      const { http, https } = adapters.asNodeAgents();
      return { agent: { http, https } };
    },
    asUndiciDispatcher: () =>
      once('dispatcher', () => {
        const { ProxyAgent } = require('undici');
        return new ProxyAgent(url);
      }),
    asUndiciFetch: () =>
      once('fetch', () => {
        const { fetch } = require('undici');
        const dispatcher = adapters.asUndiciDispatcher();
        return (input, init = {}) => fetch(input, { ...init, dispatcher });
      }),
  };

  async function destroy() {
    const { agents, dispatcher } = cache;
    for (const key of Object.keys(cache)) delete cache[key];
    if (agents) {
      agents.http.destroy();
      agents.https.destroy();
    }
    if (dispatcher) await dispatcher.destroy().catch(() => {});
  }

  return { adapters, destroy };
}

module.exports = { createAdapters };
