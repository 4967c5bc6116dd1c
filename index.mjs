import cjs from './lib/index.js';

export const {
  AluviaClient,
  AluviaApi,
  MissingApiKeyError,
  InvalidApiKeyError,
  ApiError,
  ProxyStartError,
  ConnectError,
  startEmulator,
} = cjs;
export default cjs;
