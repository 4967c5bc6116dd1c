'use strict';

const { parseArgs } = require('./args.js');
const { COMMANDS, helpText } = require('./help.js');

const commands = require('./commands.js');

const VALUE_FLAGS = new Set([
  'port',
  'gateway-port',
  'site-port',
  'site-tls-port',
  'run',
  'browser-session',
  'connection-id',
  'remove',
  'start',
  'end',
]);

function print(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fail(error, extra = {}) {
  print({ error, ...extra });
  process.exitCode = 1;
}

function portFlag(flags, name) {
  const v = flags[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v === true || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`Invalid --${name}: '${v === true ? '' : v}' must be an integer from 0 to 65535.`);
  }
  return n;
}

async function emulatorCommand(flags) {
  const { startEmulator } = require('../emulator.js');
  const emu = await startEmulator({
    port: portFlag(flags, 'port'),
    gatewayPort: portFlag(flags, 'gateway-port'),
    sitePort: portFlag(flags, 'site-port'),
    siteTlsPort: portFlag(flags, 'site-tls-port'),
    site: !flags['no-site'],
  });
  print({
    apiBaseUrl: emu.apiBaseUrl,
    apiKey: emu.apiKey,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    ...(emu.siteUrl
      ? { siteUrl: emu.siteUrl, siteHttpsUrl: emu.siteHttpsUrl, siteSpki: emu.siteSpki, siteCertificate: emu.siteCertificate }
      : {}),
    exports: [
      `export ALUVIA_API_KEY=${emu.apiKey}`,
      `export ALUVIA_API_BASE_URL=${emu.apiBaseUrl}`,
      `export ALUVIA_GATEWAY_HOST=${emu.gatewayHost}`,
      `export ALUVIA_GATEWAY_PORT=${emu.gatewayPort}`,
    ],
  });
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  await new Promise((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  clearInterval(keepAlive);
  await emu.stop();
}

// A command's handler and its options from argv.
function dispatch([command, sub, arg], flags) {
  const env = process.env;
  const browserSession = flags['browser-session'];
  const keyMissing = commands.settings(env).error;
  if (keyMissing && ['session', 'account', 'geos'].includes(command)) return { error: keyMissing };
  switch (command) {
    case 'session':
      switch (sub) {
        case 'start':
          return commands.sessionStart({
            url: arg,
            autoUnblock: flags['auto-unblock'],
            run: flags.run,
            headful: flags.headful,
            browserSession,
            connectionId: flags['connection-id'],
            disableBlockDetection: flags['disable-block-detection'],
            env,
          });
        case 'close':
          return commands.sessionClose({ browserSession, all: flags.all, env });
        case 'list':
          return commands.sessionList({ env });
        case 'get':
          return commands.sessionGet({ browserSession, env });
        case 'rotate-ip':
          return commands.sessionRotateIp({ browserSession, env });
        case 'set-geo':
          return commands.sessionSetGeo({ geo: arg, clear: flags.clear, browserSession, env });
        case 'set-rules':
          return commands.sessionSetRules({ rules: arg, remove: flags.remove, browserSession, env });
        default:
          return { error: `Unknown session subcommand: '${sub ?? ''}'. Run "aluvia help" for usage.` };
      }
    case 'account':
      if (sub === undefined) return commands.account({ env });
      if (sub === 'usage') return commands.accountUsage({ start: flags.start, end: flags.end, env });
      return { error: `Unknown account subcommand: '${sub}'.` };
    case 'geos':
      return commands.geos({ env });
    default:
      return { error: `Unknown command: '${command}'. Run "aluvia help" for usage.` };
  }
}

async function main(argv) {
  const { positionals, flags, help } = parseArgs(argv, VALUE_FLAGS);
  const [command] = positionals;
  try {
    if (help || command === undefined || command === 'help') {
      if (flags.json) print({ commands: COMMANDS });
      else process.stdout.write(`${helpText()}\n`);
      return;
    }
    if (command === 'emulator') {
      await emulatorCommand(flags);
      return;
    }
    const result = await dispatch(positionals, flags);
    print(result);
    if (result.error !== undefined) process.exitCode = 1;
  } catch (err) {
    fail(err?.message ?? String(err));
  }
}

module.exports = { main };
