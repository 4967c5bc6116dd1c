'use strict';

// The commands this CLI answers, for `aluvia help` (text) and `--json`.
const COMMANDS = [
  {
    command: 'emulator',
    description:
      'Run the local emulator of the Aluvia API and gateway (and a protected demo site) on loopback; prints one JSON line with the settings to export, then serves until interrupted.',
    options: [
      { flag: '--port <n>', description: 'API port (default: any free port)' },
      { flag: '--gateway-port <n>', description: 'Gateway port (default: any free port)' },
      { flag: '--site-port <n>', description: 'Protected demo site port (default: any free port)' },
      { flag: '--no-site', description: 'Do not serve the protected demo site' },
    ],
  },
  {
    command: 'help',
    description: 'Show this help.',
    options: [{ flag: '--json', description: 'Print the commands as JSON' }],
  },
];

function helpText() {
  const lines = ['Usage: aluvia <command> [options]', '', 'Commands:'];
  for (const c of COMMANDS) {
    lines.push(`  ${c.command}`);
    lines.push(`      ${c.description}`);
    for (const o of c.options) lines.push(`      ${o.flag.padEnd(22)} ${o.description}`);
  }
  lines.push('', 'Every command but help prints exactly one JSON object on stdout.');
  return lines.join('\n');
}

module.exports = { COMMANDS, helpText };
