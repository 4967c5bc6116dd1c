'use strict';

const errors = require('./errors.js');
const { AluviaApi } = require('./api.js');
const { AluviaClient } = require('./client.js');
const { startEmulator } = require('./emulator.js');
const { connect } = require('./connect.js');

module.exports = {
  AluviaClient,
  AluviaApi,
  connect,
  MissingApiKeyError: errors.MissingApiKeyError,
  InvalidApiKeyError: errors.InvalidApiKeyError,
  ApiError: errors.ApiError,
  ProxyStartError: errors.ProxyStartError,
  ConnectError: errors.ConnectError,
  startEmulator,
};
