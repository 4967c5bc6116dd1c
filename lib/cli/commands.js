'use strict';

// The CLI's command handlers. Each takes a plain options object and resolves
// to the one JSON object the command prints: `{ error, ...context }` on
// failure, never throwing, printing or exiting, so that the MCP server can
// call them concurrently. Files, processes and names are handled by the
// native engine (src/session.rs → crates/core/src/{store,daemon}), and so are
// their errors, which failure() prints.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomUUID } = require('node:crypto');
const native = require('../native.js');
const { mapped, CliError } = require('../errors.js');
const { ENV_OPTIONS } = require('./table.js');

const DAEMON = path.join(__dirname, 'daemon.js');
// A `--run` script's process (run by either daemon).
const RUNNER = path.join(__dirname, 'script.js');

/**
 * The session daemon's program: the native `aluvia-daemon` beside the engine
 * (which weighs a fraction of a Node process), else Node running ./daemon.js
 * (the same engine through the addon).
 */
function daemonProgram() {
  const program = native.nativeDaemon();
  return program ? { program, args: [] } : { program: process.execPath, args: [DAEMON] };
}

/** The home directory whose `.aluvia/config.json` holds the key of `aluvia auth`. */
const homeOf = (env) => env.HOME || os.homedir();

/**
 * The API key (ALUVIA_API_KEY, else the one `aluvia auth` saved) and address
 * (ALUVIA_API_BASE_URL) from the environment. `{ error }` without a key (or
 * with a config file that is not ours).
 */
function settings(env = process.env) {
  let apiKey;
  let apiBaseUrl;
  try {
    ({ apiKey } = mapped(() => native.authKey(env.ALUVIA_API_KEY ?? null, homeOf(env))));
    apiBaseUrl = mapped(() => native.apiBaseUrlFromEnv(env.ALUVIA_API_BASE_URL ?? null)) ?? undefined;
  } catch (err) {
    return failure(err);
  }
  return { apiKey, apiBaseUrl };
}

function apiFor(s) {
  const { AluviaApi } = require('../api.js');
  return new AluviaApi({ apiKey: s.apiKey, apiBaseUrl: s.apiBaseUrl });
}

/** An error as the CLI prints it: `{ error, ...context }`. */
function failure(err) {
  if (err instanceof CliError) return { error: err.message, ...err.context };
  return { error: err?.message ?? String(err) };
}

/** Runs `body(settings)` after the key check; any throw becomes `{ error }`. */
async function guarded(o, body) {
  const s = settings(o?.env);
  if (s.error) return s;
  try {
    return await body(s);
  } catch (err) {
    return failure(err);
  }
}

/** Runs `body()` (a command that needs no key); any throw becomes `{ error }`. */
async function local(body) {
  try {
    return await body();
  } catch (err) {
    return failure(err);
  }
}

const resolve = (name, purpose) => mapped(() => native.sessionResolve(name ?? null, purpose));

/** The fields `session list` shows for a lock file. */
function listFields(lock) {
  return {
    browserSession: lock.session,
    pid: lock.pid,
    startUrl: lock.url ?? null,
    cdpUrl: lock.cdpUrl ?? null,
    connectionId: lock.connectionId ?? null,
    blockDetection: lock.blockDetection ?? null,
    autoUnblock: lock.autoUnblock ?? null,
    // Ours: which browser runs, `{kind, version}`.
    browser: lock.browser ?? null,
    // Ours: the idle timeout (null: never) and since when nothing used the
    // session (null while a client is connected).
    idleTimeoutMs: lock.idleTimeoutMs ?? null,
    idleSince: lock.idleSince ?? null,
  };
}

function parseConnectionId(v) {
  if (v === undefined) return undefined;
  const text = String(v);
  const id = native.parseConnectionId(text);
  if (id === null) throw new CliError(`Invalid --connection-id: '${text}' must be a positive integer.`);
  return id;
}

/** An http(s) URL (or `about:blank`), else the CLI's error. */
function checkUrl(url) {
  if (url === 'about:blank') return;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || !['http:', 'https:'].includes(parsed.protocol) || !parsed.hostname) {
    throw new CliError(`Invalid URL: '${url}'. Use an http:// or https:// URL.`);
  }
}

/** The `--run` script's absolute path; an error when it is not a file. */
function scriptPath(run, cwd) {
  const resolved = path.resolve(cwd, run);
  let isFile = false;
  try {
    isFile = fs.statSync(resolved).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) throw new CliError(`Script not found: '${run}'.`);
  return resolved;
}

/**
 * `session start <url>`: checks what it can (URL, connection id, script,
 * Chromium), claims a name, spawns the daemon and waits (60 s at most) until
 * its browser has navigated. Options: the command's (./table.js), and cwd,
 * env, readyTimeoutMs.
 */
function sessionStart(o = {}) {
  return guarded(o, async (s) => {
    if (!o.url) return { error: 'URL is required. Usage: aluvia session start <url> [options]' };
    const url = String(o.url);
    checkUrl(url);
    const connectionId = parseConnectionId(o.connectionId);
    const blockDetection = !o.disableBlockDetection;
    // Ours: the unblock ladder; either flag implies --auto-unblock.
    const ladderGiven = o.unblockSteps !== undefined || o.unblockGeos !== undefined;
    if (ladderGiven && !blockDetection) {
      return { error: 'Cannot use --unblock-steps or --unblock-geos with --disable-block-detection.' };
    }
    const autoUnblock = blockDetection && (Boolean(o.autoUnblock) || ladderGiven);
    const cwd = o.cwd ?? process.cwd();
    const run = o.run === undefined ? undefined : scriptPath(String(o.run), cwd);
    // A Chromium that cannot be found fails here, not in the daemon.
    const source = o.env ?? process.env;
    const browser = mapped(() =>
      native.sessionBrowser(
        o.browser === undefined ? null : String(o.browser),
        source.ALUVIA_BROWSER ?? null,
        Boolean(o.headful),
      ),
    ).kind;
    const headful = Boolean(o.headful);
    const idleTimeoutMs = mapped(() =>
      native.sessionIdleTimeout(o.idleTimeout === undefined ? null : String(o.idleTimeout), headful, run !== undefined),
    );
    // A profile another session holds fails here, with that session's name.
    const home = homeOf(source);
    const profile = o.profile === undefined ? undefined : String(o.profile);
    if (profile !== undefined) await mapped(() => native.profileCheck(home, profile));
    // Steps and geos are checked (the geos against GET /geos) before anything starts.
    const text = (v) => (v === undefined ? null : String(v));
    const ladder = ladderGiven
      ? await mapped(() =>
          native.unblockFlags(s.apiKey, s.apiBaseUrl ?? null, text(o.unblockSteps), text(o.unblockGeos)),
        )
      : {};
    const requested = o.browserSession === undefined ? null : String(o.browserSession);
    const name = await mapped(() => native.sessionClaim(requested, { pid: 0, blockDetection, autoUnblock }));
    const env = {};
    for (const [k] of ENV_OPTIONS) if (source[k] !== undefined) env[k] = source[k];
    const runner = { program: process.execPath, args: [RUNNER] };
    const spec = {
      name,
      url,
      blockDetection,
      autoUnblock,
      unblockSteps: ladder.unblockSteps ?? undefined,
      unblockGeos: ladder.unblockGeos ?? undefined,
      headful,
      connectionId,
      run,
      runner,
      browser,
      idleTimeoutMs,
      profile,
      home,
    };
    const { program, args } = daemonProgram();
    // The daemon's lock as it was when it became ready (with --run it may be gone by now).
    // The key and the spec go on its stdin: a command line is every user's to read.
    const { pid, lock } = await mapped(() =>
      native.daemonSpawn({
        name,
        program,
        args,
        env,
        cwd,
        readyTimeoutMs: o.readyTimeoutMs,
        secret: `${JSON.stringify({ apiKey: s.apiKey, spec })}\n`,
      }),
    );
    return {
      browserSession: name,
      pid,
      startUrl: lock?.url ?? spec.url,
      cdpUrl: lock?.cdpUrl ?? null,
      connectionId: lock?.connectionId ?? null,
      blockDetection,
      autoUnblock,
    };
  });
}

/** Stops session `name` (SIGKILL after the engine's grace period) and removes its lock: `{ outcome, lock }`. */
const closeOne = (name) => mapped(() => native.sessionClose(name));

/** `session close`: options browserSession, all, env. */
function sessionClose(o = {}) {
  return guarded(o, async () => {
    if (o.all && o.browserSession !== undefined) {
      return {
        error: 'Cannot both close all sessions and name one. Use either --all or --browser-session <name>, not both.',
      };
    }
    if (o.all) {
      const { sessions } = await mapped(() => native.sessionList());
      if (sessions.length === 0) return { error: 'No running browser sessions found.', closed: [], count: 0 };
      await Promise.all(sessions.map((s) => closeOne(s.session)));
      const closed = sessions.map((s) => s.session);
      return { message: 'All browser sessions closed.', closed, count: closed.length };
    }
    const resolved = await resolve(o.browserSession, 'close');
    const { outcome, lock } = await closeOne(resolved.session);
    if (outcome === 'notRunning') {
      return { browserSession: resolved.session, message: 'Browser process was not running. Lock file cleaned up.' };
    }
    return {
      browserSession: lock.session,
      pid: lock.pid,
      message: outcome === 'forceKilled' ? 'Browser session force-killed.' : 'Browser session closed.',
      startUrl: lock.url ?? null,
      cdpUrl: lock.cdpUrl ?? null,
      connectionId: lock.connectionId ?? null,
    };
  });
}

/** `session list`: live sessions; lock files that are not valid are reported under `corrupt`. */
function sessionList(o = {}) {
  return guarded(o, async () => {
    const { sessions, corrupt } = await mapped(() => native.sessionList());
    const out = { sessions: sessions.map(listFields), count: sessions.length };
    if (corrupt.length) out.corrupt = corrupt.map((c) => ({ browserSession: c.name, error: c.reason }));
    return out;
  });
}

/**
 * `session get`: list fields, lastDetection, the API's connection (left out
 * when that call fails, and then, ours, `connectionError` says why), and
 * (ours) traffic.
 */
function sessionGet(o = {}) {
  return guarded(o, async (s) => {
    const lock = await resolve(o.browserSession, 'get');
    const out = { ...listFields(lock), lastDetection: lock.lastDetection ?? null };
    if (lock.connectionId != null) {
      try {
        out.connection = await apiFor(s).account.connections.get(lock.connectionId);
      } catch (err) {
        out.connectionError = failure(err).error;
      }
    }
    out.traffic = lock.traffic ?? [];
    // Ours: the last auto-unblock actions and their outcomes, oldest first.
    out.unblockLog = lock.unblockLog ?? [];
    // Ours: the gateway's last failure since the session started.
    out.lastProxyError = lock.lastProxyError ?? null;
    // Ours: how the browser is kept apart ("namespace" or "none").
    out.browserIsolation = lock.browserIsolation ?? null;
    // Ours: the persistent profile (null: a private one, removed at close).
    out.profile = lock.profile ?? null;
    return out;
  });
}

/** `profile list`: the persistent profiles of ~/.aluvia/profiles. */
function profileList(o = {}) {
  return local(async () => {
    const profiles = await mapped(() => native.profileList(homeOf(o.env ?? process.env)));
    return { profiles, count: profiles.length };
  });
}

/** `profile delete <name>`: refused while a session uses it. */
function profileDelete(o = {}) {
  return local(async () => {
    if (o.name === undefined) return { error: 'Profile name is required. Usage: aluvia profile delete <name>' };
    const name = String(o.name);
    await mapped(() => native.profileDelete(homeOf(o.env ?? process.env), name));
    return { profile: name, message: 'Profile deleted.' };
  });
}

/** `session rotate-ip`: a new session id (UUID v4) on the session's connection. */
function sessionRotateIp(o = {}) {
  return guarded(o, async (s) => {
    const lock = await resolve(o.browserSession, 'update');
    const sessionId = randomUUID();
    await apiFor(s).account.connections.patch(lock.connectionId, { session_id: sessionId });
    return { browserSession: lock.session, connectionId: lock.connectionId, sessionId };
  });
}

/** `session set-geo <geo>` / `--clear`: options geo, clear, browserSession. */
function sessionSetGeo(o = {}) {
  return guarded(o, async (s) => {
    let targetGeo = null;
    if (o.clear && o.geo !== undefined) {
      return { error: 'Cannot both set and clear the geo. Use either <geo> or --clear, not both.' };
    }
    if (!o.clear) {
      if (o.geo === undefined) {
        return { error: 'Geo code is required. Usage: aluvia session set-geo <geo> [--browser-session <name>]' };
      }
      targetGeo = String(o.geo).trim();
      if (!targetGeo) return { error: 'Geo code cannot be empty. Provide a valid geo code or use --clear.' };
    }
    const lock = await resolve(o.browserSession, 'update');
    await apiFor(s).account.connections.patch(lock.connectionId, { target_geo: targetGeo });
    return { browserSession: lock.session, connectionId: lock.connectionId, targetGeo };
  });
}

function splitRules(v) {
  if (v === undefined) return [];
  return String(v)
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
}

/** `session set-rules <a,b>` / `--remove <a,b>`: options rules, remove, browserSession. */
function sessionSetRules(o = {}) {
  return guarded(o, async (s) => {
    const add = splitRules(o.rules);
    const remove = splitRules(o.remove);
    if (add.length && remove.length) {
      return { error: 'Cannot both append and remove rules. Use either <rules> or --remove <rules>, not both.' };
    }
    if (!add.length && !remove.length) {
      return { error: 'Rules are required. Usage: aluvia session set-rules <rules> [--browser-session <name>]' };
    }
    mapped(() => native.validateRules(add.length ? add : remove));
    const lock = await resolve(o.browserSession, 'update');
    // Read, change and PATCH under the connection's lock, so that a
    // concurrent set-rules or auto-unblock on this machine is never undone.
    const rules = await mapped(() =>
      native.connectionRulesEdit(s.apiKey, s.apiBaseUrl ?? null, String(lock.connectionId), add, remove),
    );
    return { browserSession: lock.session, connectionId: lock.connectionId, rules, count: rules.length };
  });
}

/** `account`. */
function account(o = {}) {
  return guarded(o, async (s) => ({ account: await apiFor(s).account.get() }));
}

/** `account usage`: options start, end (ISO 8601). */
function accountUsage(o = {}) {
  return guarded(o, async (s) => {
    const params = {};
    if (o.start !== undefined) params.start = String(o.start);
    if (o.end !== undefined) params.end = String(o.end);
    return { usage: await apiFor(s).account.usage.get(params) };
  });
}

/** `geos`. */
function geos(o = {}) {
  return guarded(o, async (s) => {
    const list = (await apiFor(s).geos.list()) ?? [];
    const out = list.map((g) => ({ code: g.code, label: g.label }));
    return { geos: out, count: out.length };
  });
}

module.exports = {
  homeOf,
  failure,
  settings,
  sessionStart,
  sessionClose,
  sessionList,
  sessionGet,
  sessionRotateIp,
  sessionSetGeo,
  sessionSetRules,
  profileList,
  profileDelete,
  account,
  accountUsage,
  geos,
};
