'use strict';

// `aluvia <command>`: argv → the command of the table (./table.js) → one JSON
// object on stdout (help and version print text). Help and version never load
// the native engine.

const { scan, parseOptions, ArgError } = require('./args.js');
const { findCommand } = require('./table.js');
const { helpJson, helpText, commandHelpText, groupHelpText } = require('./help.js');

const GROUPS = new Set(['session', 'account', 'auth']);

function print(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fail(error, extra = {}) {
  print({ error, ...extra });
  process.exitCode = 1;
}

function portFlag(options, key, name) {
  const v = options[key];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new ArgError(`Invalid --${name}: '${v}' must be an integer from 0 to 65535.`);
  return n;
}

async function emulatorCommand(options) {
  const port = portFlag(options, 'port', 'port');
  const gatewayPort = portFlag(options, 'gatewayPort', 'gateway-port');
  const sitePort = portFlag(options, 'sitePort', 'site-port');
  const siteTlsPort = portFlag(options, 'siteTlsPort', 'site-tls-port');
  // Listen for the signals before anything is printed: whoever reads the
  // JSON line may stop the emulator at once.
  let stopRequested;
  const stopped = new Promise((resolve) => (stopRequested = resolve));
  const onSignal = () => stopRequested();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const { startEmulator } = require('../emulator.js');
  const emu = await startEmulator({ port, gatewayPort, sitePort, siteTlsPort, site: !options.noSite, autoApprove: Boolean(options.autoApprove) });
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
  await stopped;
  clearInterval(keepAlive);
  await emu.stop();
}

/** `aluvia help [command]`, `<command> --help`: text, or JSON with --json. */
function printHelp(words, json) {
  const target = findCommand(words);
  let text;
  let out;
  if (target && target.path[0] !== 'help') {
    text = commandHelpText(target);
    out = helpJson([target]);
  } else if (!target && GROUPS.has(words[0])) {
    ({ text, json: out } = groupHelpText(words[0]));
  } else {
    text = helpText();
    out = helpJson();
  }
  if (json) print(out);
  else process.stdout.write(`${text}\n`);
}

/** The command for argv, or `{ error }`. */
function resolveCommand(positionals) {
  const command = findCommand(positionals);
  const [first, second] = positionals;
  if (!command) {
    if (first === 'session') return { error: `Unknown session subcommand: '${second ?? ''}'. Run "aluvia help" for usage.` };
    return { error: `Unknown command: '${first}'. Run "aluvia help" for usage.` };
  }
  if (command.path.length === 1 && GROUPS.has(first) && second !== undefined) {
    return { error: `Unknown ${first} subcommand: '${second}'.` };
  }
  return { command };
}

async function main(argv) {
  try {
    const args = argv[0] === '--version' || argv[0] === '-v' ? ['version', ...argv.slice(1)] : argv;
    const { positionals, help, json } = scan(args);
    const stray = positionals.length === 0 && !help && args.find((a) => a !== '--json');
    if (stray) throw new ArgError(`Unknown option: '${stray.split('=')[0]}'. Run "aluvia help" for usage.`);
    if (help || positionals.length === 0 || positionals[0] === 'help') {
      printHelp(positionals[0] === 'help' ? positionals.slice(1) : positionals, json);
      return;
    }
    const { command, error } = resolveCommand(positionals);
    if (error) return fail(error);
    const parsed = parseOptions(args, command);
    const extra = parsed.positionals.slice(command.path.length + (command.args?.length ?? 0));
    if (extra.length) throw new ArgError(`Unexpected argument: '${extra[0]}'. Run "aluvia help" for usage.`);
    const options = { ...parsed.options };
    (command.args ?? []).forEach((a, i) => {
      const v = parsed.positionals[command.path.length + i];
      if (v !== undefined) options[a.key] = v;
    });
    switch (command.path[0]) {
      case 'version':
        process.stdout.write(`${require('../../package.json').version}\n`);
        return;
      case 'emulator':
        await emulatorCommand(options);
        return;
      default: {
        const result = await command.run({ ...options, env: process.env });
        print(result);
        if (result.error !== undefined) process.exitCode = 1;
      }
    }
  } catch (err) {
    fail(err?.message ?? String(err));
  }
}

module.exports = { main };
