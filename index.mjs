import cjs from './lib/index.js';

export const {
  AluviaClient,
  AluviaApi,
  connect,
  MissingApiKeyError,
  InvalidApiKeyError,
  ApiError,
  ProxyStartError,
  ConnectError,
  startEmulator,
} = cjs;
export default cjs;
