'use strict';

// `aluvia <command>`: argv → the command of the table (./table.js) → one JSON
// object on stdout (help and version print text). Help and version never load
// the native engine. Everything about a command (its flags, their values,
// its handler) is the table's; here is only how argv becomes a call.

const { scan, parseOptions, convertOptions, ArgError } = require('./args.js');
const { findCommand, unalias, GROUPS } = require('./table.js');
const { helpJson, helpText, commandHelpText, groupHelpText } = require('./help.js');

function print(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fail(error, extra = {}) {
  print({ error, ...extra });
  process.exitCode = 1;
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
    // A group without a command of its own (`session`).
    if (GROUPS.has(first)) {
      return { error: `Unknown ${first} subcommand: '${second ?? ''}'. Run "aluvia help" for usage.` };
    }
    return { error: `Unknown command: '${first}'. Run "aluvia help" for usage.` };
  }
  if (command.path.length === 1 && GROUPS.has(first) && second !== undefined) {
    return { error: `Unknown ${first} subcommand: '${second}'.` };
  }
  return { command };
}

async function main(argv) {
  try {
    const args = unalias(argv);
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
    convertOptions(options, command);
    // Text (version), the one JSON object, or nothing (the emulator prints its own).
    const result = await command.run({ ...options, env: process.env });
    if (typeof result === 'string') process.stdout.write(`${result}\n`);
    else if (result !== undefined) {
      print(result);
      if (result.error !== undefined) process.exitCode = 1;
    }
  } catch (err) {
    fail(err?.message ?? String(err));
  }
}

module.exports = { main };
