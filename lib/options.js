'use strict';

// The constructor options of AluviaClient and AluviaApi: their types and
// shapes, checked before they reach the engine (which checks the values:
// ranges, integers, hosts), so that a wrong type is a TypeError naming the
// option rather than a conversion error from the binding. `null` and
// `undefined` both mean "not given". These tables are the one list of each
// class's options: what they return is what reaches the engine.

const KINDS = {
  string: ['a string', (v) => typeof v === 'string'],
  number: ['a number', (v) => typeof v === 'number'],
  boolean: ['a boolean', (v) => typeof v === 'boolean'],
  object: ['an object', (v) => typeof v === 'object' && !Array.isArray(v)],
  function: ['a function', (v) => typeof v === 'function'],
  strings: ['an array of strings', (v) => Array.isArray(v) && v.every((s) => typeof s === 'string')],
  id: ['a finite number', (v) => typeof v === 'number' || typeof v === 'string'],
};

const API_OPTIONS = { apiKey: 'string', apiBaseUrl: 'string', timeoutMs: 'number', fetch: 'function' };

const CLIENT_OPTIONS = {
  apiKey: 'string',
  connectionId: 'id',
  strict: 'boolean',
  apiBaseUrl: 'string',
  pollIntervalMs: 'number',
  timeoutMs: 'number',
  gatewayProtocol: 'string',
  gatewayPort: 'number',
  gatewayHost: 'string',
  localPort: 'number',
  logLevel: 'string',
  startPlaywright: 'boolean',
  headless: 'boolean',
  browser: 'string',
  trustSpki: 'strings',
  blockDetection: 'object',
  profile: 'string',
};

const kindOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

/**
 * The options of the table, with `null` values and unknown names dropped; throws a TypeError naming the
 * first option whose type is wrong (the value itself is never shown: it may
 * be a secret).
 */
function checked(options, table) {
  if (options == null) return {};
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`options must be an object, got ${kindOf(options)}`);
  }
  const out = {};
  for (const [name, value] of Object.entries(options)) {
    const kind = table[name];
    if (value == null || !kind) continue;
    const [expected, ok] = KINDS[kind];
    if (!ok(value)) {
      // connectionId keeps its documented message.
      const message =
        kind === 'id' ? `${name} must be ${expected}` : `${name} must be ${expected}, got ${kindOf(value)}`;
      throw new TypeError(message);
    }
    out[name] = value;
  }
  return out;
}

module.exports = {
  apiOptions: (options) => checked(options, API_OPTIONS),
  clientOptions: (options) => checked(options, CLIENT_OPTIONS),
};
