'use strict';

// `aluvia emulator`: the local emulator (../emulator.js) until SIGINT or
// SIGTERM, after one JSON line with the settings to export.

/** Options: port, gatewayPort, sitePort, siteTlsPort (numbers), noSite, autoApprove. */
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
    exports: [
      `export ALUVIA_API_KEY=${emu.apiKey}`,
      `export ALUVIA_API_BASE_URL=${emu.apiBaseUrl}`,
      `export ALUVIA_GATEWAY_HOST=${emu.gatewayHost}`,
      `export ALUVIA_GATEWAY_PORT=${emu.gatewayPort}`,
    ],
  };
  process.stdout.write(`${JSON.stringify(settings)}\n`);
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  await stopped;
  clearInterval(keepAlive);
  await emu.stop();
}

module.exports = { emulator };
