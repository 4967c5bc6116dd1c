'use strict';

// The commands this CLI answers, for `aluvia help` (text) and `--json`.
const SESSION = { flag: '--browser-session <name>', description: 'The session (default: the only one running)' };

const COMMANDS = [
  {
    command: 'session start <url>',
    description:
      'Start a background browser session (headless Chromium through the local proxy, with block detection) and open <url>; prints once the navigation is done (a failed load is in the session log).',
    options: [
      { flag: '--auto-unblock', description: 'Route blocked hostnames through the gateway and reload' },
      { flag: '--disable-block-detection', description: 'Turn block detection (and auto-unblock) off' },
      { flag: '--run <script>', description: 'Run a script with page, browser, context as globals, then exit' },
      { flag: '--headful', description: 'Show the browser window' },
      { flag: '--browser-session <name>', description: 'Name the session (default: a generated adjective-noun)' },
      { flag: '--connection-id <id>', description: 'Reuse this account connection instead of creating one' },
    ],
  },
  {
    command: 'session close',
    description: 'Stop a session (SIGTERM, SIGKILL after 10 s) and remove its lock file.',
    options: [SESSION, { flag: '--all', description: 'Close every running session' }],
  },
  { command: 'session list', description: 'List running sessions (stale lock files are removed).', options: [] },
  {
    command: 'session get',
    description: "A session's details: last detection result, the API's connection, traffic per hostname.",
    options: [SESSION],
  },
  {
    command: 'session rotate-ip',
    description: "Give the session's connection a new session id (a new upstream IP).",
    options: [SESSION],
  },
  {
    command: 'session set-geo <geo>',
    description: "Set the session's target geo (see: aluvia geos).",
    options: [{ flag: '--clear', description: 'Clear the target geo' }, SESSION],
  },
  {
    command: 'session set-rules <rules>',
    description: 'Add comma-separated hostname rules (routed through the gateway) to the session\'s connection.',
    options: [{ flag: '--remove <rules>', description: 'Remove these rules instead' }, SESSION],
  },
  { command: 'account', description: 'Show the account.', options: [] },
  {
    command: 'account usage',
    description: "Show the account's usage.",
    options: [
      { flag: '--start <ISO8601>', description: 'Period start' },
      { flag: '--end <ISO8601>', description: 'Period end' },
    ],
  },
  { command: 'geos', description: 'List the geos available for targeting.', options: [] },
  {
    command: 'emulator',
    description:
      'Run the local emulator of the Aluvia API and gateway (and a protected demo site) on loopback; prints one JSON line with the settings to export, then serves until interrupted.',
    options: [
      { flag: '--port <n>', description: 'API port (default: any free port)' },
      { flag: '--gateway-port <n>', description: 'Gateway port (default: any free port)' },
      { flag: '--site-port <n>', description: 'Protected demo site port (default: any free port)' },
      { flag: '--site-tls-port <n>', description: 'The same site over HTTPS, HTTP/1.1 and h2 (default: any free port)' },
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
    for (const o of c.options) lines.push(`      ${o.flag.padEnd(26)} ${o.description}`);
  }
  lines.push(
    '',
    'Every command but help prints exactly one JSON object on stdout (exit 1 with {"error": ...} on failure).',
    'Environment: ALUVIA_API_KEY (required but for help and emulator), ALUVIA_API_BASE_URL, ALUVIA_GATEWAY_HOST,',
    'ALUVIA_GATEWAY_PORT, ALUVIA_GATEWAY_PROTOCOL, ALUVIA_TRUST_SPKI (comma-separated public-key pins whose',
    'certificates session browsers accept, e.g. the emulator\'s siteSpki). Sessions: lock files and logs in $TMPDIR/aluvia-sdk.',
  );
  return lines.join('\n');
}

module.exports = { COMMANDS, helpText };
