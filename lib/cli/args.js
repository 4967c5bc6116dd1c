'use strict';

// A small argv parser: positionals, `--flag`, `--flag value` for the flags
// that take one, and `--help`/`-h` anywhere.
function parseArgs(argv, valueFlags) {
  const positionals = [];
  const flags = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      help = true;
    } else if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      if (eq !== -1) {
        flags[name] = arg.slice(eq + 1);
      } else if (valueFlags.has(name)) {
        const next = argv[i + 1];
        flags[name] = next !== undefined && !next.startsWith('--') ? argv[++i] : true;
      } else {
        flags[name] = true;
      }
    } else {
      positionals.push(arg);
    }
  }
  return { positionals, flags, help };
}

module.exports = { parseArgs };
