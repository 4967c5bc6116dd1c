'use strict';

// The argv parser. `scan` finds the positionals (to know the command) and
// whether help was asked for; `parseOptions` then reads the argv against the
// command's own flags: an unknown flag, a value flag without its value and a
// boolean flag given a value are errors, never ignored; `convertOptions`
// turns typed values (ports) into what the handler takes.

const { VALUE_FLAGS } = require('./table.js');

const isHelp = (arg) => arg === '--help' || arg === '-h';
// `--name`, or a one-letter `-x`; anything else is an argument, so that a
// rule that excludes a host (`-example.com`) is not taken for a flag.
const isFlag = (arg) => (arg.startsWith('--') && arg.length > 2) || /^-[a-zA-Z]$/.test(arg);

/** Positionals (value flags of any command skip their value), `help`, `json`. */
function scan(argv) {
  const positionals = [];
  let help = false;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (isHelp(arg)) help = true;
    else if (arg === '--json') json = true;
    else if (isFlag(arg)) {
      if (!arg.includes('=') && VALUE_FLAGS.has(arg.slice(2)) && argv[i + 1] !== undefined && !isFlag(argv[i + 1])) i++;
    } else positionals.push(arg);
  }
  return { positionals, help, json };
}

/** Levenshtein distance, for "Did you mean". */
function distance(a, b) {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

class ArgError extends Error {}

function unknownOption(arg, options) {
  const name = arg.replace(/^-+/, '').split('=')[0];
  let closest;
  let best = Infinity;
  for (const o of options) {
    const d = distance(name, o.name);
    if (d < best) [best, closest] = [d, o.name];
  }
  const close = closest !== undefined && (best <= 2 || (best <= 3 && name.length >= 8) || closest.startsWith(name));
  const hint = close ? ` Did you mean '--${closest}'?` : '';
  const shown = arg.split('=')[0];
  return new ArgError(`Unknown option: '${shown}'.${hint} Run "aluvia help" for usage.`);
}

/**
 * The command's options from argv: `{ options: {key: value}, positionals }`.
 * Throws an ArgError with the CLI's message on a bad flag.
 */
function parseOptions(argv, command) {
  const byName = new Map(command.options.map((o) => [o.name, o]));
  const options = {};
  const positionals = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!isFlag(arg)) {
      positionals.push(arg);
      continue;
    }
    if (isHelp(arg) || (arg === '--json' && byName.has('json'))) continue;
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') ? arg.slice(2, eq === -1 ? undefined : eq) : undefined;
    const option = name === undefined ? undefined : byName.get(name);
    if (!option) throw unknownOption(arg, command.options);
    if (!option.value) {
      if (eq !== -1) throw new ArgError(`Option '--${name}' does not take a value.`);
      options[option.key] = true;
      continue;
    }
    let value;
    if (eq !== -1) value = arg.slice(eq + 1);
    else if (argv[i + 1] !== undefined && !isFlag(argv[i + 1])) value = argv[++i];
    if (value === undefined || value === '') throw new ArgError(`Option '--${name}' requires a value.`);
    options[option.key] = value;
  }
  return { options, positionals };
}

/** What a flag's `kind` makes of its value (`name` is the flag, for the error). */
const KINDS = {
  port(v, name) {
    const port = require('../native.js').parsePort(v);
    if (port === null) throw new ArgError(`Invalid --${name}: '${v}' must be an integer from 0 to 65535.`);
    return port;
  },
};

/** Converts the values of the command's typed flags in place, in the table's order. */
function convertOptions(options, command) {
  for (const o of command.options) {
    if (o.kind && options[o.key] !== undefined) options[o.key] = KINDS[o.kind](options[o.key], o.name);
  }
}

module.exports = { scan, parseOptions, convertOptions, ArgError };
