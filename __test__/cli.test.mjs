// The aluvia CLI end to end: real CLI processes, real daemons and Chromium,
// the emulator as API and gateway, pages on loopback. Every session runs in a
// private TMPDIR and is closed in after().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  writeFileSync,
  mkdirSync,
  chmodSync,
  chownSync,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { sdk, serve, admin, root, closedPort } from './helpers.mjs';
import { Sandbox, processes, descendants, alive, eventually, deadPid, pageHandler, startOf } from './sessions.mjs';

let emu;
let site;
let sb;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

before(async () => {
  emu = await sdk.startEmulator();
  site = await serve(pageHandler);
  sb = new Sandbox(emu, 'cli');
});

after(async () => {
  await sb?.dispose();
  await site?.close();
  await emu?.stop();
});

const LIST_FIELDS = ['browserSession', 'pid', 'startUrl', 'cdpUrl', 'connectionId', 'blockDetection', 'autoUnblock'];

test('help: text, --json with every command, --help/-h at any position, no key needed', async () => {
  const text = await sb.cli(['help'], { env: { ALUVIA_API_KEY: '' } });
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^Usage: aluvia <command>/);
  const json = await sb.cli(['help', '--json'], { env: { ALUVIA_API_KEY: '' } });
  assert.equal(json.code, 0);
  const commands = json.json.commands.map((c) => c.command);
  for (const c of [
    'session start <url>',
    'session close',
    'session list',
    'session get',
    'session rotate-ip',
    'session set-geo <geo>',
    'session set-rules <rules>',
    'account',
    'account usage',
    'geos',
    'auth',
    'auth status',
    'auth logout',
    'profile list',
    'profile delete <name>',
    'emulator',
    'version',
    'help',
  ]) {
    assert.ok(commands.includes(c), c);
  }
  for (const c of json.json.commands) {
    assert.equal(typeof c.description, 'string', c.command);
    assert.ok(Array.isArray(c.options), c.command);
  }
  const start = json.json.commands.find((c) => c.command === 'session start <url>');
  assert.deepEqual(
    start.options.map((o) => o.flag.split(' ')[0]).sort(),
    [
      '--auto-unblock',
      '--browser',
      '--browser-session',
      '--connection-id',
      '--disable-block-detection',
      '--headful',
      '--idle-timeout',
      '--profile',
      '--run',
      '--unblock-geos',
      '--unblock-steps',
    ].sort(),
  );
  for (const args of [
    ['session', 'list', '--help'],
    ['-h', 'geos'],
    ['session', 'start', 'http://x', '-h'],
  ]) {
    const r = await sb.cli(args, { env: { ALUVIA_API_KEY: '' } });
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.stdout, /^Usage: aluvia/);
  }
  // -h with words that name no command: the whole help.
  const anywhere = await sb.cli(['nonsense', '-h', '--json'], { env: { ALUVIA_API_KEY: '' } });
  assert.equal(anywhere.code, 0);
  assert.deepEqual(anywhere.json, json.json);
});

test('every command but help requires a key: ALUVIA_API_KEY or the one aluvia auth saved', async () => {
  const cases = [
    ['session', 'start', site.url],
    ['session', 'close'],
    ['session', 'list'],
    ['session', 'get'],
    ['session', 'rotate-ip'],
    ['session', 'set-geo', 'us'],
    ['session', 'set-rules', 'a.com'],
    ['account'],
    ['account', 'usage'],
    ['geos'],
  ];
  for (const args of cases) {
    // HOME without .aluvia: no saved key either.
    const r = await sb.cli(args, { env: { ALUVIA_API_KEY: '', HOME: sb.tmp } });
    assert.equal(r.code, 1, args.join(' '));
    assert.deepEqual(
      r.json,
      { error: 'No API key found. Run `aluvia auth` to log in, or set ALUVIA_API_KEY.' },
      args.join(' '),
    );
    assert.equal(r.stdout.trim().split('\n').length, 1);
  }
});

test('argument errors: exact strings, exit 1, one JSON object', async () => {
  const cases = [
    [['session', 'start'], 'URL is required. Usage: aluvia session start <url> [options]'],
    [
      ['session', 'start', site.url, '--connection-id', 'abc'],
      "Invalid --connection-id: 'abc' must be a positive integer.",
    ],
    [
      ['session', 'start', site.url, '--connection-id', '0'],
      "Invalid --connection-id: '0' must be a positive integer.",
    ],
    [
      ['session', 'start', site.url, '--connection-id', '1.5'],
      "Invalid --connection-id: '1.5' must be a positive integer.",
    ],
    [
      ['session', 'start', site.url, '--browser-session', 'bad name!'],
      'Invalid session name. Use only letters, numbers, hyphens, and underscores.',
    ],
    [
      ['session', 'start', site.url, '--browser-session', '../etc'],
      'Invalid session name. Use only letters, numbers, hyphens, and underscores.',
    ],
    [['session', 'set-geo'], 'Geo code is required. Usage: aluvia session set-geo <geo> [--browser-session <name>]'],
    [['session', 'set-geo', '  '], 'Geo code cannot be empty. Provide a valid geo code or use --clear.'],
    [
      ['session', 'set-rules'],
      'Rules are required. Usage: aluvia session set-rules <rules> [--browser-session <name>]',
    ],
    [
      ['session', 'set-rules', 'a.com', '--remove', 'b.com'],
      'Cannot both append and remove rules. Use either <rules> or --remove <rules>, not both.',
    ],
    [['bogus'], 'Unknown command: \'bogus\'. Run "aluvia help" for usage.'],
    [['session', 'bogus'], 'Unknown session subcommand: \'bogus\'. Run "aluvia help" for usage.'],
    [['account', 'bogus'], "Unknown account subcommand: 'bogus'."],
  ];
  for (const [args, error] of cases) {
    const r = await sb.cli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.deepEqual(r.json, { error }, args.join(' '));
  }
  assert.deepEqual(sb.locks(), [], 'no lock file left by a refused start');
});

test('flags are checked: unknown ones (with a suggestion), values missing or unwanted, stray arguments', async () => {
  const usage = 'Run "aluvia help" for usage.';
  const cases = [
    [
      ['session', 'start', site.url, '--auto-unblok'],
      `Unknown option: '--auto-unblok'. Did you mean '--auto-unblock'? ${usage}`,
    ],
    [
      ['session', 'set-rules', 'a.com', '--remvoe', 'b.com'],
      `Unknown option: '--remvoe'. Did you mean '--remove'? ${usage}`,
    ],
    [['session', 'close', '--al'], `Unknown option: '--al'. Did you mean '--all'? ${usage}`],
    [['session', 'list', '--frobnicate'], `Unknown option: '--frobnicate'. ${usage}`],
    [['session', 'get', '--all'], `Unknown option: '--all'. ${usage}`],
    [['geos', '--json'], `Unknown option: '--json'. ${usage}`],
    [['account', '-x'], `Unknown option: '-x'. ${usage}`],
    [['-x'], `Unknown option: '-x'. ${usage}`],
    [['session', 'start', site.url, '--run'], "Option '--run' requires a value."],
    [['session', 'start', site.url, '--browser-session', '--headful'], "Option '--browser-session' requires a value."],
    [['session', 'start', site.url, '--connection-id='], "Option '--connection-id' requires a value."],
    [['account', 'usage', '--start'], "Option '--start' requires a value."],
    [['session', 'close', '--all=yes'], "Option '--all' does not take a value."],
    [['session', 'start', site.url, 'extra'], `Unexpected argument: 'extra'. ${usage}`],
    [['session', 'close', 'swift-falcon'], `Unexpected argument: 'swift-falcon'. ${usage}`],
    [
      ['session', 'close', '--all', '--browser-session', 'x'],
      'Cannot both close all sessions and name one. Use either --all or --browser-session <name>, not both.',
    ],
  ];
  for (const [args, error] of cases) {
    const r = await sb.cli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.deepEqual(r.json, { error }, args.join(' '));
  }
  // Flags are checked before the key.
  const keyless = await sb.cli(['session', 'list', '--bogus'], { env: { ALUVIA_API_KEY: '' } });
  assert.equal(keyless.json.error, `Unknown option: '--bogus'. ${usage}`);
});

test('session start refuses a bad URL, a missing script and a wrong ALUVIA_CHROMIUM_PATH before any daemon', async () => {
  const invalid = (v) => `Invalid URL: '${v}'. Use an http:// or https:// URL.`;
  const notExecutable = join(sb.tmp, 'not-executable');
  writeFileSync(notExecutable, 'plain file');
  const cases = [
    [['session', 'start', 'not a url'], invalid('not a url')],
    [['session', 'start', 'localhost:8080/x'], invalid('localhost:8080/x')],
    [['session', 'start', 'file:///etc/passwd'], invalid('file:///etc/passwd')],
    [['session', 'start', 'javascript:alert(1)'], invalid('javascript:alert(1)')],
    [['session', 'start', 'http://'], invalid('http://')],
    [['session', 'start', site.url, '--run', 'no-such-script.mjs'], "Script not found: 'no-such-script.mjs'."],
    [['session', 'start', site.url, '--run', sb.tmp], `Script not found: '${sb.tmp}'.`],
  ];
  for (const [args, error] of cases) {
    const r = await sb.cli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.deepEqual(r.json, { error }, args.join(' '));
  }
  for (const [path, what] of [
    [join(sb.tmp, 'no-chromium-here'), 'does not exist'],
    [notExecutable, 'is not an executable file'],
  ]) {
    const r = await sb.cli(['session', 'start', site.url], { env: { ALUVIA_CHROMIUM_PATH: path } });
    assert.equal(r.code, 1);
    assert.deepEqual(r.json, {
      error: `ALUVIA_CHROMIUM_PATH is set to '${path}', which ${what}. Point it at a Chromium executable, or unset it to use the first one found.`,
    });
  }
  assert.deepEqual(sb.locks(), [], 'no lock file');
  const logs = existsSync(sb.lockDir) ? readdirSync(sb.lockDir).filter((f) => f.endsWith('.log')) : [];
  assert.deepEqual(logs, [], 'no daemon was spawned');
});

test('--version, -v and version print the package version; <command> --help is that command only', async () => {
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  for (const args of [['--version'], ['-v'], ['version']]) {
    const r = await sb.cli(args, { env: { ALUVIA_API_KEY: '' } });
    assert.equal(r.code, 0, args.join(' '));
    assert.equal(r.stdout, `${version}\n`, args.join(' '));
  }
  const start = await sb.cli(['session', 'start', '--help']);
  assert.equal(start.code, 0);
  assert.match(start.stdout, /^Usage: aluvia session start <url> \[options\]\n/);
  assert.match(start.stdout, /--run <script>/);
  assert.match(start.stdout, /\nExample:\n {2}aluvia session start https:\/\/example\.com/);
  assert.doesNotMatch(start.stdout, /set-rules|--remove|emulator/, 'not the whole list');
  const viaHelp = await sb.cli(['help', 'session', 'start']);
  assert.equal(viaHelp.stdout, start.stdout);
  const json = await sb.cli(['session', 'close', '-h', '--json']);
  assert.deepEqual(
    json.json.commands.map((c) => c.command),
    ['session close'],
  );
  assert.deepEqual(
    json.json.commands[0].options.map((o) => o.flag),
    ['--browser-session <name>', '--all'],
  );
  const group = await sb.cli(['session', '--help']);
  assert.match(group.stdout, /^Usage: aluvia session <subcommand>/);
  assert.match(group.stdout, /session rotate-ip/);
  assert.doesNotMatch(group.stdout, /account usage/);
});

test('with no session running', async () => {
  const none = { error: 'No running browser sessions found.' };
  const cases = [
    [['session', 'close'], none],
    [['session', 'close', '--all'], { ...none, closed: [], count: 0 }],
    [['session', 'get'], none],
    [['session', 'rotate-ip'], none],
    [['session', 'set-geo', 'us'], none],
    [['session', 'set-rules', 'a.com'], none],
    [['session', 'set-rules', '-a.com,b.com'], none],
    [['session', 'set-rules', '--remove', '-a.com'], none],
    [
      ['session', 'close', '--browser-session', 'ghost'],
      { error: 'No running browser session found.', browserSession: 'ghost' },
    ],
    [['session', 'get', '--browser-session', 'ghost'], { error: "No session found with name 'ghost'." }],
    [['session', 'rotate-ip', '--browser-session', 'ghost'], { error: "No session found with name 'ghost'." }],
  ];
  for (const [args, expected] of cases) {
    const r = await sb.cli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.deepEqual(r.json, expected, args.join(' '));
  }
  const list = await sb.cli(['session', 'list']);
  assert.equal(list.code, 0);
  assert.deepEqual(list.json, { sessions: [], count: 0 });
});

test('set-rules refuses rules with control characters, before looking for a session', async () => {
  const cases = [
    [['a\x07b.com'], 'a\\u{7}b.com'],
    [['ok.com,\x1b[31mred.com'], '\\u{1b}[31mred.com'],
    [['del\x7f.com'], 'del\\u{7f}.com'],
    [['nel\u0085.com'], 'nel\\u{85}.com'],
    [['a\tb.com'], 'a\\tb.com'],
    [['--remove', 'x\u009b31m.com'], 'x\\u{9b}31m.com'],
    [['--remove', 'ok.com,y\x01.com'], 'y\\u{1}.com'],
  ];
  for (const [args, shown] of cases) {
    const r = await sb.cli(['session', 'set-rules', ...args]);
    assert.equal(r.code, 1, JSON.stringify(args));
    assert.deepEqual(r.json, { error: `Invalid rule '${shown}': rules cannot contain control characters.` });
    assert.doesNotMatch(r.stdout.trimEnd(), /\p{Cc}/u, 'no raw control character is printed');
  }
});

test('account, account usage, geos', async () => {
  const account = await sb.cli(['account']);
  assert.equal(account.code, 0);
  assert.equal(typeof account.json.account, 'object');
  assert.ok(account.json.account);
  const usage = await sb.cli(['account', 'usage', '--start', '2026-01-01T00:00:00Z', '--end', '2026-02-01T00:00:00Z']);
  assert.equal(usage.code, 0, usage.stdout);
  assert.equal(typeof usage.json.usage, 'object');
  const geos = await sb.cli(['geos']);
  assert.equal(geos.code, 0);
  assert.ok(geos.json.count > 0);
  assert.equal(geos.json.count, geos.json.geos.length);
  assert.ok(geos.json.geos.some((g) => g.code === 'us_ca' && typeof g.label === 'string'));
  assert.deepEqual(Object.keys(geos.json.geos[0]).sort(), ['code', 'label']);
  const bad = await sb.cli(['account'], { env: { ALUVIA_API_KEY: 'wrong-key' } });
  assert.equal(bad.code, 1);
  assert.match(bad.json.error, /Authentication failed/);
  // A bad ALUVIA_API_BASE_URL is reported under its own name, userinfo left out.
  for (const args of [['account'], ['geos'], ['auth']]) {
    const url = await sb.cli(args, { env: { ALUVIA_API_BASE_URL: 'ftp://admin:S3CRET@host/v1' } });
    assert.equal(url.code, 1, url.stdout);
    assert.deepEqual(url.json, {
      error: "Invalid ALUVIA_API_BASE_URL 'ftp://[redacted]@host/v1': the scheme must be http or https",
    });
  }
});

test('a session: start, list, get, rotate-ip, set-geo, set-rules, name in use, ambiguity, close', async () => {
  const started = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'alpha']);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  const s = started.json;
  assert.deepEqual(Object.keys(s), LIST_FIELDS);
  assert.equal(s.browserSession, 'alpha');
  assert.equal(s.startUrl, `${site.url}/`);
  assert.match(s.cdpUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(typeof s.connectionId, 'number');
  assert.equal(s.blockDetection, true);
  assert.equal(s.autoUnblock, false);
  assert.ok(alive(s.pid));

  // The lock file: 0600, the documented fields, no secrets.
  const lock = sb.readLock('alpha');
  assert.equal(lock.pid, s.pid);
  assert.equal(lock.ready, true);
  assert.equal(lock.url, `${site.url}/`);
  assert.match(lock.proxyUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(statSync(sb.lockPath('alpha')).mode & 0o777, 0o600);
  assert.equal(statSync(sb.lockDir).mode & 0o777, 0o700);
  assert.equal(statSync(sb.logPath('alpha')).mode & 0o777, 0o600);
  const conn = (await admin(emu, 'GET', `/v1/account/connections/${s.connectionId}`)).body;
  const password = JSON.stringify(conn).match(/"proxy_password":"([^"]+)"/)?.[1];
  assert.ok(password, 'the connection has a gateway password to look for');
  for (const text of [JSON.stringify(lock), sb.log('alpha')]) {
    assert.ok(!text.includes(emu.apiKey), 'no API key');
    assert.ok(!text.includes(password), 'no proxy password');
  }

  const list = await sb.cli(['session', 'list']);
  // Ours beside the documented fields: which browser runs, and the idle clock.
  const { browser, idleTimeoutMs, idleSince, ...listed } = list.json.sessions[0];
  assert.deepEqual({ ...list.json, sessions: [listed] }, { sessions: [s], count: 1 });
  assert.equal(idleTimeoutMs, 3_600_000, 'a headless session closes after 1 h idle unless told otherwise');
  assert.ok(!Number.isNaN(Date.parse(idleSince)), idleSince);
  assert.equal(browser.kind, process.env.ALUVIA_BROWSER || 'chromium');
  assert.match(browser.version, /^\d+\.\d+\.\d+\.\d+$/);

  // The first page's detection result reaches the lock shortly after the start.
  const get = await eventually(
    async () => {
      const g = await sb.cli(['session', 'get']);
      return g.json.lastDetection ? g : null;
    },
    { what: "the start page's detection in the lock", intervalMs: 200 },
  );
  assert.equal(get.code, 0);
  for (const k of LIST_FIELDS) assert.deepEqual(get.json[k], s[k], k);
  assert.equal(get.json.lastDetection.hostname, '127.0.0.1');
  assert.equal(get.json.lastDetection.lastUrl, `${site.url}/`);
  assert.equal(get.json.lastDetection.blockStatus, 'clear');
  assert.equal(get.json.connection.connection_id, s.connectionId);
  assert.ok(Array.isArray(get.json.traffic));

  // Runtime changes go to the API on the session's connection.
  const rotated = await sb.cli(['session', 'rotate-ip']);
  assert.equal(rotated.code, 0);
  assert.equal(rotated.json.browserSession, 'alpha');
  assert.equal(rotated.json.connectionId, s.connectionId);
  assert.match(rotated.json.sessionId, UUID_V4);
  const api = new sdk.AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
  assert.equal((await api.account.connections.get(s.connectionId)).session_id, rotated.json.sessionId);

  const geo = await sb.cli(['session', 'set-geo', 'us_ca']);
  assert.deepEqual(geo.json, { browserSession: 'alpha', connectionId: s.connectionId, targetGeo: 'us_ca' });
  assert.equal((await api.account.connections.get(s.connectionId)).target_geo, 'us_ca');
  const cleared = await sb.cli(['session', 'set-geo', '--clear', '--browser-session', 'alpha']);
  assert.deepEqual(cleared.json, { browserSession: 'alpha', connectionId: s.connectionId, targetGeo: null });
  assert.equal((await api.account.connections.get(s.connectionId)).target_geo, null);
  const badGeo = await sb.cli(['session', 'set-geo', 'xx_nowhere']);
  assert.equal(badGeo.code, 1);
  assert.ok(badGeo.json.error.length > 0);

  await api.account.connections.patch(s.connectionId, { rules: ['keep.com'] });
  const added = await sb.cli(['session', 'set-rules', 'a.com, b.com,keep.com']);
  assert.deepEqual(added.json, {
    browserSession: 'alpha',
    connectionId: s.connectionId,
    rules: ['keep.com', 'a.com', 'b.com'],
    count: 3,
  });
  const removed = await sb.cli(['session', 'set-rules', '--remove', 'a.com,keep.com']);
  assert.deepEqual(removed.json, { browserSession: 'alpha', connectionId: s.connectionId, rules: ['b.com'], count: 1 });
  assert.deepEqual((await api.account.connections.get(s.connectionId)).rules, ['b.com']);
  for (const args of [['x\x1b[31m.com'], ['--remove', 'b.com,\x07']]) {
    const bad = await sb.cli(['session', 'set-rules', ...args, '--browser-session', 'alpha']);
    assert.equal(bad.code, 1);
    assert.match(bad.json.error, /^Invalid rule '.+': rules cannot contain control characters\.$/);
  }
  assert.deepEqual((await api.account.connections.get(s.connectionId)).rules, ['b.com'], 'unchanged');

  // The name is taken.
  const again = await sb.cli(['session', 'start', site.url, '--browser-session', 'alpha']);
  assert.equal(again.code, 1);
  assert.deepEqual(again.json, {
    error: "A browser session named 'alpha' is already running.",
    browserSession: 'alpha',
    pid: s.pid,
    startUrl: s.startUrl,
    cdpUrl: s.cdpUrl,
    connectionId: s.connectionId,
  });

  // A second session (auto-named, reusing the connection): ambiguity.
  const second = await sb.cli(['session', 'start', `${site.url}/two`, '--connection-id', String(s.connectionId)]);
  assert.equal(second.code, 0, second.stdout);
  assert.match(second.json.browserSession, /^[a-z]+-[a-z]+(-\d+)?$/);
  assert.equal(second.json.connectionId, s.connectionId);
  const names = ['alpha', second.json.browserSession].sort();
  const ambiguous = await sb.cli(['session', 'get']);
  assert.deepEqual(ambiguous.json, {
    error: 'Multiple sessions running. Specify --browser-session <name>.',
    browserSessions: names,
  });
  for (const sub of [['rotate-ip'], ['set-geo', 'us'], ['set-rules', 'x.com']]) {
    const r = await sb.cli(['session', ...sub]);
    assert.equal(r.json.error, 'Multiple sessions running. Specify --browser-session <name>.', sub[0]);
  }
  const ambiguousClose = await sb.cli(['session', 'close']);
  assert.deepEqual(ambiguousClose.json, {
    error: 'Multiple sessions running. Specify --browser-session <name> or --all.',
    browserSessions: names,
  });
  assert.equal((await sb.cli(['session', 'list'])).json.count, 2);

  // Close by name: graceful, lock removed, daemon and its Chromium gone.
  const browsers = descendants(s.pid);
  assert.ok(browsers.length > 0, 'the daemon runs Chromium');
  const closed = await sb.cli(['session', 'close', '--browser-session', 'alpha']);
  assert.deepEqual(closed.json, {
    browserSession: 'alpha',
    pid: s.pid,
    message: 'Browser session closed.',
    startUrl: s.startUrl,
    cdpUrl: s.cdpUrl,
    connectionId: s.connectionId,
  });
  assert.equal(sb.readLock('alpha'), null);
  assert.ok(!alive(s.pid));
  await eventually(() => browsers.every((p) => !alive(p)), { what: 'Chromium to exit' });
  assert.match(sb.log('alpha'), /stopping \(SIGTERM\)/);

  // Close the other with --all.
  const all = await sb.cli(['session', 'close', '--all']);
  assert.deepEqual(all.json, {
    message: 'All browser sessions closed.',
    closed: [second.json.browserSession],
    count: 1,
  });
  assert.deepEqual(sb.locks(), []);
});

test('stale, dead, corrupt and connection-less lock files', async (t) => {
  await sb.cli(['session', 'list']); // creates the directory
  t.after(() => {
    for (const n of ['noconn', 'broken', 'gone']) rmSync(sb.lockPath(n), { force: true });
  });
  const dead = await deadPid();
  sb.plant('gone', { pid: dead, session: 'gone', ready: true, cdpUrl: 'http://127.0.0.1:9', connectionId: 1 });
  const get = await sb.cli(['session', 'get', '--browser-session', 'gone']);
  assert.deepEqual(get.json, { error: "Session 'gone' is no longer running (stale lock cleaned up)." });
  assert.equal(sb.readLock('gone'), null);

  sb.plant('gone', { pid: dead, session: 'gone' });
  const close = await sb.cli(['session', 'close', '--browser-session', 'gone']);
  assert.equal(close.code, 0);
  assert.deepEqual(close.json, {
    browserSession: 'gone',
    message: 'Browser process was not running. Lock file cleaned up.',
  });
  assert.equal(sb.readLock('gone'), null);

  sb.plant('gone', { pid: dead, session: 'gone' });
  sb.plant('broken', '{"pid": 12');
  const list = await sb.cli(['session', 'list']);
  assert.equal(list.code, 0);
  assert.equal(list.json.count, 0);
  assert.deepEqual(list.json.sessions, []);
  assert.equal(list.json.corrupt.length, 1);
  assert.equal(list.json.corrupt[0].browserSession, 'broken');
  assert.match(list.json.corrupt[0].error, /invalid lock file/);
  assert.equal(sb.readLock('gone'), null, 'stale lock removed by list');

  // A live process (this test runner) with no connection id.
  sb.plant('noconn', { pid: process.pid, processStart: startOf(process.pid), session: 'noconn', ready: true });
  for (const sub of [['rotate-ip'], ['set-geo', 'us'], ['set-rules', 'a.com']]) {
    const r = await sb.cli(['session', ...sub, '--browser-session', 'noconn']);
    assert.deepEqual(r.json, {
      error: "Session 'noconn' has no connection ID. It may have been started without API access.",
    });
  }
});

test('a lock directory with a wrong mode is refused', async () => {
  const bad = new Sandbox(emu, 'cli-mode');
  try {
    mkdirSync(bad.lockDir, { mode: 0o755 });
    chmodSync(bad.lockDir, 0o755);
    for (const args of [
      ['session', 'list'],
      ['session', 'start', site.url],
    ]) {
      const r = await bad.cli(args);
      assert.equal(r.code, 1);
      assert.match(r.json.error, /^Refusing to use lock directory .*aluvia-sdk/);
    }
  } finally {
    rmSync(bad.tmp, { recursive: true, force: true });
  }
});

test("another user's lock directory sends this user to its own; another user's at that name too is refused", {
  skip: process.getuid?.() !== 0 && 'needs root to give the lock directory to another user',
}, async () => {
  const bad = new Sandbox(emu, 'cli-owner');
  try {
    mkdirSync(bad.lockDir, { mode: 0o700 });
    chmodSync(bad.lockDir, 0o700);
    chownSync(bad.lockDir, 65534, 65534);
    const own = join(bad.tmp, `aluvia-sdk-${process.getuid()}`);
    const listed = await bad.cli(['session', 'list']);
    assert.equal(listed.code, 0, listed.stdout);
    assert.deepEqual(listed.json, { sessions: [], count: 0 });
    assert.equal(statSync(own).mode & 0o7777, 0o700);
    chownSync(own, 65534, 65534);
    const r = await bad.cli(['session', 'list']);
    assert.equal(r.code, 1);
    assert.match(r.json.error, /owned by uid 65534/);
    assert.ok(r.json.error.includes(own), r.json.error);
  } finally {
    rmSync(bad.tmp, { recursive: true, force: true });
  }
});

test('a daemon that dies while starting: exact error, log file, the cause in reason, no lock left, no secret', async () => {
  const secret = 'sk_live_not_a_real_key_123456';
  const cases = [
    [
      'bad-id',
      ['--connection-id', '999999'],
      {},
      'API request failed (HTTP 404) code=not_found message=Connection not found.',
    ],
    [
      'bad-key',
      [],
      { ALUVIA_API_KEY: secret },
      'Authentication failed (HTTP 401). Check token validity and that you are using an account API token for account endpoints.',
    ],
    [
      'no-api',
      [],
      { ALUVIA_API_BASE_URL: 'http://127.0.0.1:1/v1' },
      /^API request failed: cannot reach http:\/\/127\.0\.0\.1:1\/v1 \(.*refused.*\)$/i,
    ],
    // The environment's variable is named, not the option it sets.
    [
      'bad-port',
      [],
      { ALUVIA_GATEWAY_PORT: '70000' },
      "ALUVIA_GATEWAY_PORT must be an integer from 0 to 65535, got '70000'",
    ],
    [
      'text-port',
      [],
      { ALUVIA_GATEWAY_PORT: 'abc' },
      "ALUVIA_GATEWAY_PORT must be an integer from 0 to 65535, got 'abc'",
    ],
    [
      'bad-host',
      [],
      { ALUVIA_GATEWAY_HOST: 'admin:pw@gateway' },
      'ALUVIA_GATEWAY_HOST must be a host name or IP address alone (no scheme, user, password, port, path or spaces)',
    ],
    [
      'bad-protocol',
      [],
      { ALUVIA_GATEWAY_PROTOCOL: 'socks5' },
      "ALUVIA_GATEWAY_PROTOCOL must be 'http' or 'https', got 'socks5'",
    ],
    [
      'no-display',
      ['--headful'],
      { DISPLAY: '', WAYLAND_DISPLAY: '' },
      'A headful browser needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set. Start it headless, or run it where a display is available.',
    ],
  ];
  for (const [name, flags, env, reason] of cases) {
    const r = await sb.cli(['session', 'start', site.url, '--browser-session', name, ...flags], { env });
    assert.equal(r.code, 1, name);
    const { reason: got, ...rest } = r.json;
    assert.deepEqual(rest, {
      error: 'Browser process exited unexpectedly.',
      browserSession: name,
      logFile: sb.logPath(name),
    });
    if (typeof reason === 'string') assert.equal(got, reason, name);
    else assert.match(got, reason, name);
    assert.equal(sb.readLock(name), null, name);
    assert.match(sb.log(name), /failed to start: /, name);
    assert.ok(!r.stdout.includes(secret) && !sb.log(name).includes(secret), `${name}: the key is in no output`);
  }
});

test('--run: the script gets page, browser, context; output to the log; the session ends', async () => {
  const dir = join(sb.tmp, 'scripts');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'ok.mjs'),
    `console.log('Title:', await page.title());
const second = await context.newPage();
await second.goto(${JSON.stringify(`${site.url}/two`)});
console.log('Other title:', await second.title());
console.log('Contexts:', browser.contexts().length);
`,
  );
  writeFileSync(join(dir, 'fail.mjs'), `await page.title();\nthrow new Error('script exploded on purpose');\n`);

  // The path is resolved from the caller's cwd.
  const ok = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'runner', '--run', 'ok.mjs'], {
    cwd: dir,
  });
  assert.equal(ok.code, 0, ok.stdout);
  assert.equal(ok.json.browserSession, 'runner');
  await eventually(() => !alive(ok.json.pid), { what: 'the --run daemon to exit' });
  const log = sb.log('runner');
  assert.match(log, /Title: Local Page/);
  assert.match(log, /Other title: Second Page/);
  assert.match(log, /Contexts: 1/);
  assert.match(log, /stopped, exit 0/);
  assert.equal(sb.readLock('runner'), null);

  const fail = await sb.cli(['session', 'start', site.url, '--browser-session', 'failer', '--run', 'fail.mjs'], {
    cwd: dir,
  });
  assert.equal(fail.code, 0);
  await eventually(() => !alive(fail.json.pid), { what: 'the failing --run daemon to exit' });
  const failLog = sb.log('failer');
  assert.match(failLog, /script failed: Error: script exploded on purpose/);
  assert.match(failLog, /stopped, exit 1/);
  assert.equal(sb.readLock('failer'), null);
});

test('eight parallel starts of one name: one wins, seven get name-in-use, one daemon', async () => {
  // This checkout's daemons (what a session was started with is not on their command line).
  const daemonPids = () =>
    processes()
      .filter(
        (p) =>
          (p.args.startsWith(join(root, 'aluvia-daemon')) || p.args.includes(join(root, 'lib', 'cli', 'daemon.js'))) &&
          alive(p.pid),
      )
      .map((p) => p.pid);
  const earlier = new Set(daemonPids());
  const runs = await Promise.all(
    Array.from({ length: 8 }, () => sb.cli(['session', 'start', site.url, '--browser-session', 'same'])),
  );
  const wins = runs.filter((r) => r.code === 0);
  const losses = runs.filter((r) => r.code === 1);
  assert.equal(wins.length, 1, JSON.stringify(runs.map((r) => r.json)));
  assert.equal(losses.length, 7);
  for (const l of losses) {
    assert.equal(l.json.error, "A browser session named 'same' is already running.");
    assert.equal(l.json.browserSession, 'same');
  }
  assert.deepEqual(
    daemonPids().filter((pid) => !earlier.has(pid)),
    [wins[0].json.pid],
  );
  const closed = await sb.cli(['session', 'close']);
  assert.equal(closed.json.message, 'Browser session closed.');
});

test('SIGKILL on a daemon: its Chromium dies too, and list removes its lock', async () => {
  const r = await sb.cli(['session', 'start', site.url, '--browser-session', 'victim']);
  assert.equal(r.code, 0);
  const pid = r.json.pid;
  const tree = descendants(pid);
  const chromium = processes().filter((p) => tree.includes(p.pid) && /chrom/i.test(p.args));
  assert.ok(chromium.length > 0, 'Chromium runs under the daemon');
  const userDataDir = chromium.map((p) => p.args.match(/--user-data-dir=(\S+)/)?.[1]).find(Boolean);
  assert.ok(userDataDir, 'Chromium runs with a profile of its own');
  process.kill(pid, 'SIGKILL');
  await eventually(() => !alive(pid), { what: 'the daemon to die' });
  await eventually(() => tree.every((p) => !alive(p)), { what: 'Chromium to die with its daemon' });
  assert.ok(!processes().some((p) => p.args.includes(userDataDir)), 'nothing uses its profile');
  assert.ok(sb.readLock('victim'), 'the lock outlives a SIGKILLed daemon');
  const list = await sb.cli(['session', 'list']);
  assert.deepEqual([list.json.sessions, list.json.count], [[], 0]);
  assert.equal(sb.readLock('victim'), null);
  assert.equal(existsSync(userDataDir), false, 'stale cleanup removed its Chromium profile');
});

test('--auto-unblock on the protected site: lastDetection and the hostname rule show up', async () => {
  const r = await sb.cli(['session', 'start', emu.siteUrl, '--auto-unblock', '--browser-session', 'shield']);
  assert.equal(r.code, 0, r.stdout);
  assert.equal(r.json.autoUnblock, true);
  assert.equal(r.json.blockDetection, true);
  const get = await eventually(
    async () => {
      const g = await sb.cli(['session', 'get']);
      // Blocked direct, the rule added, reloaded through the gateway: clear.
      return g.json.lastDetection?.blockStatus === 'clear' && g.json.connection?.rules?.includes('127.0.0.1')
        ? g
        : null;
    },
    { what: 'the unblock rule and a clear result after the reload', timeoutMs: 30_000, intervalMs: 300 },
  );
  const d = get.json.lastDetection;
  assert.equal(d.hostname, '127.0.0.1');
  assert.equal(d.persistentBlock, false);
  assert.match(sb.log('shield'), /auto-unblock: 127\.0\.0\.1 now goes through the gateway; page reloaded/);
  assert.equal(typeof d.score, 'number');
  assert.ok(Array.isArray(d.signals) && d.signals.every((x) => typeof x === 'string'));
  assert.ok(['fast', 'full'].includes(d.pass));
  assert.equal(typeof d.persistentBlock, 'boolean');
  assert.equal(typeof d.timestamp, 'number');
  assert.deepEqual(Object.keys(d).sort(), [
    'blockStatus',
    'hostname',
    'lastUrl',
    'pass',
    'persistentBlock',
    'score',
    'signals',
    'timestamp',
  ]);
  const gateway = await eventually(
    async () =>
      (await sb.cli(['session', 'get'])).json.traffic.find((t) => t.hostname === '127.0.0.1' && t.route === 'gateway'),
    { what: 'gateway traffic in the lock', intervalMs: 300 },
  );
  assert.ok(gateway.requests + gateway.tunnels > 0);
  await sb.cli(['session', 'close']);
});

test('a browser that goes away ends its daemon gracefully (lock removed)', async () => {
  const r = await sb.cli(['session', 'start', site.url, '--browser-session', 'orphaned']);
  assert.equal(r.code, 0);
  const pid = r.json.pid;
  const browser = processes().find((p) => p.ppid === pid && /chrom/i.test(p.args) && !p.args.includes('--type='));
  assert.ok(browser, 'the daemon runs a Chromium browser process');
  process.kill(browser.pid, 'SIGKILL');
  await eventually(() => !alive(pid), { what: 'the daemon to notice and exit' });
  await eventually(() => sb.readLock('orphaned') === null, { what: 'the daemon to remove its lock' });
});

test('session get when the API fails: connection is left out and connectionError is the API error', async () => {
  const started = await sb.cli(['session', 'start', `${site.url}/`, '--browser-session', 'offline']);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  const { connectionId } = started.json;
  const get = (env) => sb.cli(['session', 'get', '--browser-session', 'offline'], { env });
  try {
    const fine = await get();
    assert.equal(fine.json.connection.connection_id, connectionId);
    assert.ok(!('connectionError' in fine.json));

    // The API answers 500: the same message as the API client's error.
    const api = new sdk.AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
    await admin(emu, 'POST', '/_emulator/faults', { apiStatus: 500 });
    let failing;
    let apiError;
    try {
      failing = await get();
      apiError = await api.account.connections.get(connectionId).then(
        () => assert.fail('the API call should fail'),
        (err) => err,
      );
    } finally {
      await admin(emu, 'DELETE', '/_emulator/faults');
    }
    assert.equal(failing.code, 0, failing.stdout);
    assert.ok(!('connection' in failing.json));
    assert.equal(failing.json.connectionError, apiError.message);
    assert.match(failing.json.connectionError, /HTTP 500/);
    for (const k of LIST_FIELDS) assert.deepEqual(failing.json[k], started.json[k], k);
    assert.ok(Array.isArray(failing.json.traffic));

    // No API at that address at all.
    const port = await closedPort();
    const down = await get({ ALUVIA_API_BASE_URL: `http://127.0.0.1:${port}/v1` });
    assert.equal(down.code, 0, down.stdout);
    assert.ok(!('connection' in down.json));
    assert.match(
      down.json.connectionError,
      new RegExp(`^API request failed: cannot reach http://127\\.0\\.0\\.1:${port}/v1`),
    );
    assert.ok(!down.json.connectionError.includes('\n'));

    assert.equal((await get()).json.connection.connection_id, connectionId, 'the connection is back with the API');
  } finally {
    await sb.cli(['session', 'close', '--browser-session', 'offline']);
  }
});
