'use strict';

const native = require('./native.js');
const { mapped } = require('./errors.js');

/**
 * Start the local emulator of the Aluvia API and gateway (and, unless
 * `site: false`, the protected demo site) on loopback. `autoApprove`
 * approves every `aluvia auth` login at once; `authInterval` and
 * `authExpiresIn` (seconds) shorten its logins for tests. The stricter site
 * (also set at runtime with `PUT /_emulator/site`): `flagFirstExit` challenges
 * the first session id each connection arrives with (cleared by rotating the
 * IP), `allowedGeos` serves only those geos (cleared by setting one).
 */
async function startEmulator(opts = {}) {
  const emu = await mapped(() =>
    native.startEmulator({
      port: opts.port,
      gatewayPort: opts.gatewayPort,
      site: opts.site,
      sitePort: opts.sitePort,
      siteTlsPort: opts.siteTlsPort,
      apiKey: opts.apiKey,
      autoApprove: opts.autoApprove,
      authInterval: opts.authInterval,
      authExpiresIn: opts.authExpiresIn,
      flagFirstExit: opts.flagFirstExit,
      allowedGeos: opts.allowedGeos,
    }),
  );
  return {
    apiBaseUrl: emu.apiBaseUrl,
    apiKey: emu.apiKey,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    siteUrl: emu.siteUrl ?? undefined,
    siteHttpsUrl: emu.siteHttpsUrl ?? undefined,
    siteCertificate: emu.siteCertificate ?? undefined,
    siteSpki: emu.siteSpki ?? undefined,
    stop: () => mapped(() => emu.stop()),
  };
}

/** The exit address the emulator's gateway uses for a session id and geo. */
function emulatorExitAddress(sessionId, targetGeo) {
  return native.emulatorExitAddress(sessionId ?? undefined, targetGeo ?? undefined);
}

module.exports = { startEmulator, emulatorExitAddress };
