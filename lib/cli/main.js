'use strict';

const { parseArgs } = require('./args.js');
const { COMMANDS, helpText } = require('./help.js');

const VALUE_FLAGS = new Set(['port', 'gateway-port', 'site-port']);

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
    site: !flags['no-site'],
  });
  print({
    apiBaseUrl: emu.apiBaseUrl,
    apiKey: emu.apiKey,
    gatewayHost: emu.gatewayHost,
    gatewayPort: emu.gatewayPort,
    ...(emu.siteUrl ? { siteUrl: emu.siteUrl } : {}),
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

async function main(argv) {
  const { positionals, flags, help } = parseArgs(argv, VALUE_FLAGS);
  const [command] = positionals;
  try {
    if (help || command === undefined || command === 'help') {
      if (flags.json) print({ commands: COMMANDS });
      else process.stdout.write(`${helpText()}\n`);
      return;
    }
    switch (command) {
      case 'emulator':
        await emulatorCommand(flags);
        return;
      default:
        fail(`Unknown command: '${command}'. Run "aluvia help" for usage.`);
    }
  } catch (err) {
    fail(err?.message ?? String(err));
  }
}

module.exports = { main };
