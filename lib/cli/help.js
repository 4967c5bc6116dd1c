'use strict';

// `aluvia help` (text and --json) and each command's own --help, from the
// command table.

const { COMMANDS, usage, flagText } = require('./table.js');

/** A command as `help --json` lists it. */
function describe(c) {
  return {
    command: usage(c),
    description: c.description,
    options: c.options.map((o) => ({ flag: flagText(o), description: o.description })),
  };
}

const helpJson = (commands = COMMANDS) => ({ commands: commands.map(describe) });

function optionLines(c, indent) {
  return c.options.map((o) => `${indent}${flagText(o).padEnd(26)} ${o.description}`);
}

function helpText() {
  const lines = ['Usage: aluvia <command> [options]', '', 'Commands:'];
  for (const c of COMMANDS) {
    lines.push(`  ${usage(c)}`);
    lines.push(`      ${c.description}`);
    lines.push(...optionLines(c, '      '));
  }
  lines.push(
    '',
    'Every command but help and version prints exactly one JSON object on stdout (exit 1 with {"error": ...} on failure).',
    '"aluvia <command> --help" shows one command with an example.',
    'API key: ALUVIA_API_KEY, else the key "aluvia auth" saved in ~/.aluvia/config.json (required but for help, version, auth and emulator).',
    'Environment: ALUVIA_API_KEY, ALUVIA_API_BASE_URL, ALUVIA_GATEWAY_HOST,',
    'ALUVIA_GATEWAY_PORT, ALUVIA_GATEWAY_PROTOCOL, ALUVIA_CHROMIUM_PATH, ALUVIA_TRUST_SPKI (comma-separated public-key',
    "pins whose certificates session browsers accept, e.g. the emulator's siteSpki), ALUVIA_BROWSER (chromium, the default,",
    'or headless-shell), ALUVIA_BROWSER_ISOLATION (namespace, the default on Linux, or none). Sessions: lock files and',
    'logs in $TMPDIR/aluvia-sdk ($TMPDIR/aluvia-sdk-<uid> when another user holds that name).',
  );
  return lines.join('\n');
}

/** One command's help: usage, description, its flags, one example. */
function commandHelpText(c) {
  const lines = [`Usage: aluvia ${usage(c)}${c.options.length ? ' [options]' : ''}`, '', c.description];
  if (c.options.length) lines.push('', 'Options:', ...optionLines(c, '  '));
  lines.push('', 'Example:', `  ${c.example}`);
  return lines.join('\n');
}

/** The commands of a group (`session`), for `aluvia session --help`. */
function groupHelpText(word) {
  const group = COMMANDS.filter((c) => c.path[0] === word);
  const lines = [`Usage: aluvia ${word} <subcommand> [options]`, '', 'Subcommands:'];
  for (const c of group) lines.push(`  ${usage(c).padEnd(28)} ${c.description}`);
  lines.push('', `"aluvia ${word} <subcommand> --help" shows one subcommand with an example.`);
  return { text: lines.join('\n'), json: helpJson(group) };
}

module.exports = { helpJson, helpText, commandHelpText, groupHelpText, describe };
