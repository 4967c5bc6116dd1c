'use strict';

// The error classes of the public API, and the one place where an error from
// the native engine becomes the matching class.

class MissingApiKeyError extends Error {
  constructor(message = 'Aluvia apiKey is required') {
    super(message);
    this.name = 'MissingApiKeyError';
  }
}

class InvalidApiKeyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'InvalidApiKeyError';
  }
}

class ApiError extends Error {
  constructor(message, statusCode) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = statusCode;
  }
}

class ProxyStartError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProxyStartError';
  }
}

class ConnectError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConnectError';
  }
}

// An error the CLI prints with context fields (`{ error, ...context }`):
// the engine's session errors (with a stable `code` such as
// `SessionNameInUse`, `ProfileInUse`) and the CLI's own checks. Internal to the CLI and the
// MCP server.
class CliError extends Error {
  constructor(message, context = {}, code = undefined) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.context = context;
  }
}

const SEP = '\u001f';

// Native errors arrive as "SEP code SEP status SEP context SEP message" (see
// src/errors.rs), the context being JSON fields or empty.
function fromNative(err) {
  if (!err || typeof err.message !== 'string' || !err.message.startsWith(SEP)) return err;
  const [, code, status, context, ...rest] = err.message.split(SEP);
  const message = rest.join(SEP);
  const statusCode = status ? Number(status) : undefined;
  switch (code) {
    case 'MissingApiKeyError':
      return new MissingApiKeyError(message);
    case 'InvalidApiKeyError':
      return new InvalidApiKeyError(message);
    case 'ApiError':
      return new ApiError(message, statusCode);
    case 'ProxyStartError':
      return new ProxyStartError(message);
    case 'ConnectError':
      return new ConnectError(message);
    case 'InvalidArgument':
      return new Error(message);
    case 'TypeError':
      return new TypeError(message);
    case 'RangeError':
      return new RangeError(message);
    default: {
      if (/^(Session|Profile)/.test(code)) return new CliError(message, context ? JSON.parse(context) : {}, code);
      const e = new Error(message);
      e.code = code;
      return e;
    }
  }
}

// Run a native call (sync or async) and map whatever it throws.
function mapped(fn) {
  let result;
  try {
    result = fn();
  } catch (err) {
    throw fromNative(err);
  }
  if (result && typeof result.then === 'function') {
    return result.then(undefined, (err) => {
      throw fromNative(err);
    });
  }
  return result;
}

module.exports = {
  MissingApiKeyError,
  InvalidApiKeyError,
  ApiError,
  ProxyStartError,
  ConnectError,
  CliError,
  fromNative,
  mapped,
};
