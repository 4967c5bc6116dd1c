'use strict';

// The one table of the CLI's commands. It feeds `aluvia help` (text and
// --json), each command's own --help, the flag parser (which flags a command
// takes and which of them take a value), dispatch, and the MCP server's tool
// schemas. The handlers (./commands.js) load the native engine, so they are
// required only when a command runs: help and version work without it.
//
// A command: `path` (its words), `aliases` (what else names it as the first
// argument), `args` (positionals: option key, placeholder, MCP description),
// `description`, `example`, `options` (flags), `exclusive` (two option keys
// that cannot go together), `run(options)` (resolves to the JSON object to
// print, text, or nothing when it prints itself) and `tool` (the MCP tool:
// `name`, `description` (what the tool does; the command and the exclusive
// parameters are added), `required`, `output` to change what the tool
// returns). A flag: `name`, `key`, `description`, `value` (its placeholder
// when it takes one), `kind` (how the CLI converts the value: 'port'),
// `schema` (its MCP type when not a string or boolean) and `tool` (its MCP
// description, or false when the tool leaves it out).

const handlers = () => require('./commands.js');
const authHandlers = () => require('./auth.js');

/** A flag: `--name` (boolean) or `--name <value>`; its option key is camelCase. */
function flag(name, description, extra = {}) {
  const key = name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  return { name, key, description, ...extra };
}

const sessionFlag = (description) =>
  flag('browser-session', description, {
    value: '<name>',
    tool: 'Session name; auto-selected when exactly one session runs',
  });
const SESSION = sessionFlag('The session (default: the only one running)');

const COMMANDS = [
  {
    path: ['session', 'start'],
    args: [{ key: 'url', placeholder: '<url>', tool: 'URL to open (http or https)' }],
    description:
      'Start a background browser session (headless Chromium through the local proxy, with block detection) and open <url>; prints once the navigation is done (a failed load is in the session log).',
    example: 'aluvia session start https://example.com --auto-unblock',
    options: [
      flag('auto-unblock', 'Route blocked hostnames through the gateway and reload', {
        tool: 'Detect blocks and re-route blocked sites through the gateway',
      }),
      flag('disable-block-detection', 'Turn block detection (and auto-unblock) off'),
      flag(
        'unblock-steps',
        'The unblock ladder (implies --auto-unblock): rule, rotate, geo in the order to try, comma-separated (default: rule); rotate changes the exit IP of the whole session',
        {
          value: '<steps>',
          tool: "Unblock ladder, comma-separated: 'rule', 'rotate', 'geo' in order (implies autoUnblock; default 'rule'); rotate changes the exit IP of the whole session",
        },
      ),
      flag('unblock-geos', "The geos the ladder's geo step tries, in order (comma-separated; from aluvia geos)", {
        value: '<geos>',
        tool: "Geo codes the 'geo' unblock step tries, in order, comma-separated (from geos_list)",
      }),
      flag('run', 'Run a script with page, browser, context as globals, then exit', {
        value: '<script>',
        tool: false,
      }),
      flag('headful', 'Show the browser window (needs a display)'),
      flag(
        'browser',
        'Which Chromium: chromium (default; the full browser, new headless) or headless-shell (half the memory, older headless mode)',
        {
          value: '<kind>',
          schema: { type: 'string', enum: ['chromium', 'headless-shell'] },
          tool: "Which Chromium: 'chromium' (default) or 'headless-shell' (lighter, easier to fingerprint)",
        },
      ),
      flag('browser-session', 'Name the session (default: a generated adjective-noun)', {
        value: '<name>',
        tool: 'Name for the session (letters, numbers, hyphens, underscores)',
      }),
      flag('connection-id', 'Reuse this account connection instead of creating one', {
        value: '<id>',
        schema: { type: 'integer', minimum: 1 },
        tool: 'Reuse this account connection',
      }),
      flag(
        'idle-timeout',
        'Close the session after this long without a CDP client or a command on it: 90s, 30m, 2h, milliseconds, or 0 for never (default: 1h; never with --headful or --run)',
        {
          value: '<d>',
          tool: "Close the session after this long unused: '90s', '30m', '2h', or '0' for never (default: '1h')",
        },
      ),
      flag(
        'profile',
        'Use the persistent profile ~/.aluvia/profiles/<name> (cookies, local storage and logins kept after close; one session at a time)',
        {
          value: '<name>',
          tool: 'Persistent profile name: logins and cookies survive to the next session with it',
        },
      ),
    ],
    run: (o) => handlers().sessionStart(o),
    tool: {
      name: 'session_start',
      description: 'Start a background headless browser session on a URL',
      required: ['url'],
    },
  },
  {
    path: ['session', 'close'],
    description: 'Stop a session (SIGTERM, SIGKILL after 10 s) and remove its lock file.',
    example: 'aluvia session close --browser-session swift-falcon',
    options: [SESSION, flag('all', 'Close every running session')],
    exclusive: ['all', 'browserSession'],
    run: (o) => handlers().sessionClose(o),
    tool: {
      name: 'session_close',
      description: 'Close a browser session, or all of them',
    },
  },
  {
    path: ['session', 'list'],
    description: 'List running sessions (stale lock files are removed).',
    example: 'aluvia session list',
    options: [],
    run: (o) => handlers().sessionList(o),
    tool: { name: 'session_list', description: 'List running browser sessions' },
  },
  {
    path: ['session', 'get'],
    description: "A session's details: last detection result, the API's connection, traffic per hostname.",
    example: 'aluvia session get',
    options: [SESSION],
    run: (o) => handlers().sessionGet(o),
    tool: {
      name: 'session_get',
      description: 'Details of a session: block detection state, the connection, traffic',
      // What an agent reads may end up in a model's logs, and it never needs
      // the gateway password: the tool shows it redacted (the CLI does not).
      output: (out) =>
        out?.connection && typeof out.connection === 'object' && 'proxy_password' in out.connection
          ? { ...out, connection: { ...out.connection, proxy_password: '[redacted]' } }
          : out,
    },
  },
  {
    path: ['session', 'rotate-ip'],
    description: "Give the session's connection a new session id (a new upstream IP).",
    example: 'aluvia session rotate-ip',
    options: [SESSION],
    run: (o) => handlers().sessionRotateIp(o),
    tool: {
      name: 'session_rotate_ip',
      description: "Rotate the session's exit IP with a new session ID",
    },
  },
  {
    path: ['session', 'set-geo'],
    args: [{ key: 'geo', placeholder: '<geo>', tool: 'Geo code, e.g. us_ca' }],
    description: "Set the session's target geo (see: aluvia geos).",
    example: 'aluvia session set-geo us_ca',
    options: [flag('clear', 'Clear the target geo', { tool: 'Clear geo targeting' }), SESSION],
    exclusive: ['geo', 'clear'],
    run: (o) => handlers().sessionSetGeo(o),
    tool: {
      name: 'session_set_geo',
      description: "Set or clear the session's geo targeting",
    },
  },
  {
    path: ['session', 'set-rules'],
    args: [{ key: 'rules', placeholder: '<rules>', tool: 'Comma-separated rules to append' }],
    description: "Add comma-separated hostname rules (routed through the gateway) to the session's connection.",
    example: 'aluvia session set-rules "example.com,*.example.org"',
    options: [
      flag('remove', 'Remove these rules instead', { value: '<rules>', tool: 'Comma-separated rules to remove' }),
      SESSION,
    ],
    exclusive: ['rules', 'remove'],
    run: (o) => handlers().sessionSetRules(o),
    tool: {
      name: 'session_set_rules',
      description: "Append to or remove from the session's routing rules",
    },
  },
  {
    path: ['profile', 'list'],
    description:
      'List the persistent profiles of ~/.aluvia/profiles: size, when last used, and the session using each (if any).',
    example: 'aluvia profile list',
    options: [],
    run: (o) => handlers().profileList(o),
    tool: { name: 'profile_list', description: 'List persistent browser profiles (kept logins and cookies)' },
  },
  {
    path: ['profile', 'delete'],
    args: [{ key: 'name', placeholder: '<name>' }],
    description: 'Delete a persistent profile and everything it holds (refused while a session uses it).',
    example: 'aluvia profile delete work',
    options: [],
    run: (o) => handlers().profileDelete(o),
  },
  {
    path: ['account'],
    description: 'Show the account.',
    example: 'aluvia account',
    options: [],
    run: (o) => handlers().account(o),
    tool: { name: 'account_get', description: 'Account details' },
  },
  {
    path: ['account', 'usage'],
    description: "Show the account's usage.",
    example: 'aluvia account usage --start 2026-01-01T00:00:00Z',
    options: [
      flag('start', 'Period start', { value: '<ISO8601>', tool: 'Start, ISO 8601' }),
      flag('end', 'Period end', { value: '<ISO8601>', tool: 'End, ISO 8601' }),
    ],
    run: (o) => handlers().accountUsage(o),
    tool: { name: 'account_usage', description: 'Account usage' },
  },
  {
    path: ['geos'],
    description: 'List the geos available for targeting.',
    example: 'aluvia geos',
    options: [],
    run: (o) => handlers().geos(o),
    tool: { name: 'geos_list', description: 'Available geo codes' },
  },
  {
    path: ['auth'],
    description:
      'Log in once instead of exporting a key: prints a URL and a code on stderr, waits for the approval in the browser, checks the key and saves it to ~/.aluvia/config.json (readable by you only). ALUVIA_API_KEY still wins when set.',
    example: 'aluvia auth',
    options: [],
    run: (o) => authHandlers().authLogin(o),
  },
  {
    path: ['auth', 'status'],
    description: 'Whether a key is available and where from (env or config); never prints the key.',
    example: 'aluvia auth status',
    options: [],
    run: (o) => authHandlers().authStatus(o),
  },
  {
    path: ['auth', 'logout'],
    description: 'Remove the key that aluvia auth saved.',
    example: 'aluvia auth logout',
    options: [],
    run: (o) => authHandlers().authLogout(o),
  },
  {
    path: ['emulator'],
    description:
      'Run the local emulator of the Aluvia API and gateway (and a protected demo site) on loopback; prints one JSON line with the settings to export, then serves until interrupted. Needs no API key.',
    example: 'aluvia emulator --port 8700',
    options: [
      flag('port', 'API port (default: any free port)', { value: '<n>', kind: 'port' }),
      flag('gateway-port', 'Gateway port (default: any free port)', { value: '<n>', kind: 'port' }),
      flag('site-port', 'Protected demo site port (default: any free port)', { value: '<n>', kind: 'port' }),
      flag('site-tls-port', 'The same site over HTTPS, HTTP/1.1 and h2 (default: any free port)', {
        value: '<n>',
        kind: 'port',
      }),
      flag('no-site', 'Do not serve the protected demo site'),
      flag('auto-approve', 'Approve every aluvia auth login at once'),
      flag('flag-first-exit', "The demo site challenges each connection's first gateway IP (cleared by rotate-ip)"),
      flag('allowed-geos', 'The demo site serves only these geos (comma-separated; cleared by set-geo)', {
        value: '<geos>',
      }),
    ],
    run: (o) => require('./emulator.js').emulator(o),
  },
  {
    path: ['version'],
    aliases: ['--version', '-v'],
    description: 'Print the package version (also: --version, -v).',
    example: 'aluvia --version',
    options: [],
    run: () => require('../../package.json').version,
  },
  {
    path: ['help'],
    description:
      'Show this help; "aluvia help <command>" shows one command\'s (as do <command> --help and -h at any position).',
    example: 'aluvia help session start',
    options: [flag('json', 'Print the commands as JSON')],
  },
];

/**
 * The environment variables that set client options, handed on to a session
 * daemon (whose engine reads them; the API key goes over its stdin), and that
 * `aluvia emulator` prints as exports: variable and option.
 */
const ENV_OPTIONS = [
  ['ALUVIA_API_BASE_URL', 'apiBaseUrl'],
  ['ALUVIA_GATEWAY_HOST', 'gatewayHost'],
  ['ALUVIA_GATEWAY_PORT', 'gatewayPort'],
  ['ALUVIA_GATEWAY_PROTOCOL', 'gatewayProtocol'],
  ['ALUVIA_TRUST_SPKI', 'trustSpki'],
  ['ALUVIA_BROWSER', 'browser'],
];

/** `session start <url>`: how a command is written in help. */
function usage(command) {
  return [...command.path, ...(command.args ?? []).map((a) => a.placeholder)].join(' ');
}

/** `--run <script>`. */
function flagText(option) {
  return option.value ? `--${option.name} ${option.value}` : `--${option.name}`;
}

/** How a flag can be written in a message: `--run <script>` and `--run`, or `--all`. */
const flagForms = (option) => (option.value ? [flagText(option), `--${option.name}`] : [flagText(option)]);

/** argv with a command's alias in first place replaced by the command's words. */
function unalias(argv) {
  const command = COMMANDS.find((c) => c.aliases?.includes(argv[0]));
  return command ? [...command.path, ...argv.slice(1)] : argv;
}

/** The command whose path the positionals start with (the longest match), or undefined. */
function findCommand(positionals) {
  let best;
  for (const c of COMMANDS) {
    if (c.path.every((word, i) => positionals[i] === word) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best;
}

/** Every flag that takes a value, in any command. */
const VALUE_FLAGS = new Set(COMMANDS.flatMap((c) => c.options.filter((o) => o.value).map((o) => o.name)));

/** The first words of commands with subcommands (`session`). */
const GROUPS = new Set(COMMANDS.filter((c) => c.path.length > 1).map((c) => c.path[0]));

module.exports = { COMMANDS, ENV_OPTIONS, usage, flagText, flagForms, unalias, findCommand, VALUE_FLAGS, GROUPS };
