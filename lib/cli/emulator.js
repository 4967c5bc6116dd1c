'use strict';

// `aluvia emulator`: the local emulator (../emulator.js) until SIGINT or
// SIGTERM, after one JSON line with the settings to export.

const { ENV_OPTIONS } = require('./table.js');

/**
 * Options: port, gatewayPort, sitePort, siteTlsPort (numbers), noSite,
 * autoApprove, flagFirstExit, allowedGeos (comma-separated).
 */
async function emulator(options) {
  // Listen for the signals before anything is printed: whoever reads the
  // JSON line may stop the emulator at once.
  let stopRequested;
  const stopped = new Promise((resolve) => (stopRequested = resolve));
  const onSignal = () => stopRequested();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const { startEmulator } = require('../emulator.js');
  const { port, gatewayPort, sitePort, siteTlsPort } = options;
  const emu = await startEmulator({
    port,
    gatewayPort,
    sitePort,
    siteTlsPort,
    site: !options.noSite,
    autoApprove: Boolean(options.autoApprove),
    flagFirstExit: Boolean(options.flagFirstExit),
    allowedGeos:
      options.allowedGeos === undefined
        ? undefined
        : String(options.allowedGeos)
            .split(',')
            .map((g) => g.trim())
            .filter(Boolean),
  });
  const settings = {
    apiBaseUrl: emu.apiBaseUrl,
    apiKey: emu.apiKey,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    ...(emu.siteUrl
      ? {
          siteUrl: emu.siteUrl,
          siteHttpsUrl: emu.siteHttpsUrl,
          siteSpki: emu.siteSpki,
          siteCertificate: emu.siteCertificate,
        }
      : {}),
    // The key, then each setting the CLI reads from the environment that the emulator has.
    exports: [
      `export ALUVIA_API_KEY=${emu.apiKey}`,
      ...ENV_OPTIONS.filter(([, key]) => emu[key] !== undefined).map(([name, key]) => `export ${name}=${emu[key]}`),
    ],
  };
  process.stdout.write(`${JSON.stringify(settings)}\n`);
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  await stopped;
  clearInterval(keepAlive);
  await emu.stop();
}

module.exports = { emulator };
