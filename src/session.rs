//! The CLI's background sessions: lock files, names, the daemon launcher and
//! process control. Their failures are the engine's `SessionError`s, each
//! crossing once through `session_err` with its code and context fields;
//! `connect()`'s have code `ConnectError`.

use aluvia_core::AluviaError;
use aluvia_core::{daemon, store};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::blocking;
use crate::client::{raw_client_options, BindingClientOptions};
use crate::errors::{json_err, session_err, to_napi};

fn lock_dir() -> Result<store::LockDir> {
    store::LockDir::open_default().map_err(to_napi)
}

fn lock_json(lock: &store::LockData) -> Result<Value> {
    serde_json::to_value(lock).map_err(json_err)
}

/// `{ sessions: [lock…], corrupt: [{ name, reason }] }`: the live sessions
/// sorted by name (stale lock files removed), and lock files that are not
/// valid (reported, left in place).
#[napi]
pub async fn session_list() -> Result<Value> {
    blocking(|| {
        let found = lock_dir()?.live_sessions().map_err(to_napi)?;
        let sessions = found.live.iter().map(lock_json).collect::<Result<Vec<_>>>()?;
        let corrupt: Vec<Value> = found
            .corrupt
            .into_iter()
            .map(|(name, reason)| serde_json::json!({ "name": name, "reason": reason }))
            .collect();
        Ok(serde_json::json!({ "sessions": sessions, "corrupt": corrupt }))
    })
    .await
}

/// The lock of session `name`, or of the only live one, for `purpose`
/// (`close`, `get`, `update` or `connect`); the exact CLI or `connect()`
/// error otherwise.
#[napi]
pub async fn session_resolve(name: Option<String>, purpose: String) -> Result<Value> {
    let purpose = store::Purpose::parse(&purpose)
        .ok_or_else(|| to_napi(AluviaError::Invalid(format!("unknown purpose '{purpose}'"))))?;
    blocking(move || {
        // connect() promises a ConnectError, also when the lock directory is refused.
        let dir = match store::LockDir::open_default() {
            Ok(dir) => dir,
            Err(e) if purpose == store::Purpose::Connect => return Err(to_napi(AluviaError::Connect(e.to_string()))),
            Err(e) => return Err(to_napi(e)),
        };
        let lock = store::resolve_session(&dir, name.as_deref(), purpose).map_err(session_err)?;
        // A command on a session is a client of it: its idle clock starts again.
        if matches!(purpose, store::Purpose::Get | store::Purpose::Update) {
            if let Some(cdp_url) = &lock.cdp_url {
                aluvia_core::browser::touch(cdp_url);
            }
        }
        lock_json(&lock)
    })
    .await
}

/// Claims a name (a custom one, or a generated one when `None`) and writes
/// its early lock file from `initial` (`pid` defaults to this process).
#[napi]
pub async fn session_claim(name: Option<String>, initial: Value) -> Result<String> {
    blocking(move || {
        let initial: store::LockData = serde_json::from_value(initial).map_err(json_err)?;
        let dir = lock_dir()?;
        dir.claim(name.as_deref(), initial).map_err(session_err)
    })
    .await
}

/// The native session daemon (`aluvia-daemon`) beside this addon, if it is
/// there; `session start` runs Node with `lib/cli/daemon.js` otherwise.
#[napi]
pub fn native_daemon() -> Option<String> {
    daemon::native_daemon_beside(native_daemon as fn() -> Option<String> as usize).map(|p| p.display().to_string())
}

/// The browser a `session start` would run: the kind its `--browser` flag (or
/// `ALUVIA_BROWSER`, `env`) asks for and the executable found for it, or the
/// error that session would fail with.
#[napi]
pub fn session_browser(flag: Option<String>, env: Option<String>, headful: bool) -> Result<BindingBrowserChoice> {
    use aluvia_core::browser::launch::{choose_kind, find_chromium};
    let kind = choose_kind(flag.as_deref(), "--browser", env.as_deref(), headful).map_err(to_napi)?;
    let path = find_chromium(kind).map_err(to_napi)?;
    Ok(BindingBrowserChoice { kind: kind.as_str().to_string(), path: path.display().to_string() })
}

#[napi(object)]
pub struct BindingBrowserChoice {
    /// `chromium` or `headless-shell`.
    pub kind: String,
    pub path: String,
}

#[napi(object)]
pub struct BindingDaemonSpawn {
    /// The claimed session name: its lock's pid becomes the daemon's; the log is `cli-{name}.log`.
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: std::collections::HashMap<String, String>,
    pub cwd: String,
    /// Default 60000.
    pub ready_timeout_ms: Option<u32>,
    /// Handed over on the daemon's stdin (`sessionDaemonSecret`), never on
    /// its command line or in its environment: the API key, and what the
    /// session was started with.
    pub secret: Option<String>,
}

#[napi(object)]
pub struct BindingDaemonReady {
    pub pid: u32,
    /// The daemon's lock as it was when it became ready (camelCase lock
    /// fields), even when it has ended since (`--run`); `null` if it sent none.
    pub lock: Option<Value>,
}

/// Spawns the daemon of claimed session `name` and waits until it is ready,
/// or fails with the CLI's error and `browserSession` + `logFile`. On a
/// timeout the daemon keeps running under its lock; on any other failure
/// nothing is left running (see `daemon::spawn_daemon`).
#[napi]
pub async fn daemon_spawn(spec: BindingDaemonSpawn) -> Result<BindingDaemonReady> {
    let dir = blocking(lock_dir).await?;
    let log_path = dir.log_path(&spec.name);
    let log_file = log_path.to_string_lossy().into_owned();
    let name = spec.name.clone();
    let launch = daemon::DaemonSpawn {
        program: spec.program.into(),
        args: spec.args,
        env: spec.env.into_iter().collect(),
        cwd: spec.cwd.into(),
        log_path,
        ready_timeout: spec
            .ready_timeout_ms
            .map(|ms| std::time::Duration::from_millis(ms.into()))
            .unwrap_or(daemon::DEFAULT_READY_TIMEOUT),
        secret: spec.secret,
        claimed_lock: Some((dir.clone(), name.clone())),
    };
    let ready = daemon::spawn_daemon(launch).await.map_err(|e| session_err(e.for_session(name, log_file)))?;
    Ok(BindingDaemonReady { pid: ready.pid, lock: ready.lock.as_ref().map(lock_json).transpose()? })
}

#[napi(object)]
pub struct BindingSessionDaemon {
    /// The session; its lock names this process.
    pub name: String,
    pub url: String,
    pub headful: Option<bool>,
    pub block_detection: Option<bool>,
    pub auto_unblock: Option<bool>,
    /// Ours: the unblock ladder (`blockDetection.unblockSteps` and `unblockGeos`).
    pub unblock_steps: Option<Vec<String>>,
    pub unblock_geos: Option<Vec<String>>,
    /// The API key and connection id; the API and gateway addresses not set
    /// here come from the daemon's `ALUVIA_*` environment, and the daemon sets
    /// the browser, polling and detection options itself.
    pub client: BindingClientOptions,
    /// The `--run` script, if any.
    pub run: Option<BindingScriptRun>,
    /// Ours: the idle timeout in ms (absent or null: never).
    pub idle_timeout_ms: Option<f64>,
    /// Ours: the persistent profile, and the home directory it lives in.
    pub profile: Option<String>,
    pub home: Option<String>,
}

/// A `--run` script, run in a child process of the daemon (see `daemon::ScriptRun`).
#[napi(object)]
pub struct BindingScriptRun {
    /// The runner: the program (Node) and its arguments.
    pub program: String,
    pub args: Vec<String>,
    /// The script's absolute path; the runner gets it, and the CDP URL, on its stdin.
    pub script: String,
}

/// Where a stop for this process's daemon is requested.
fn daemon_stop() -> &'static daemon::DaemonStop {
    static STOP: std::sync::OnceLock<daemon::DaemonStop> = std::sync::OnceLock::new();
    STOP.get_or_init(daemon::DaemonStop::new)
}

/// The session daemon's whole life (see `daemon::run_daemon`): resolves to
/// its exit code once it has stopped and removed its lock. SIGTERM and SIGINT
/// stop it. With `run`, the script runs in a child process once the session
/// is ready, and the daemon ends with it (0 when it finished, 1 when it failed).
#[napi]
pub async fn session_daemon_run(spec: BindingSessionDaemon) -> Result<i32> {
    let dir = blocking(lock_dir).await?;
    let run = daemon::DaemonRun {
        dir,
        name: spec.name,
        url: spec.url,
        headful: spec.headful.unwrap_or(false),
        block_detection: spec.block_detection.unwrap_or(true),
        auto_unblock: spec.auto_unblock.unwrap_or(false),
        unblock_steps: spec.unblock_steps,
        unblock_geos: spec.unblock_geos,
        client: raw_client_options(spec.client),
        handle_signals: true,
        idle_timeout: spec.idle_timeout_ms.filter(|ms| *ms > 0.0).map(|ms| std::time::Duration::from_millis(ms as u64)),
        profile: spec.profile,
        home: spec.home,
    };
    let script = spec.run.map(|r| daemon::ScriptRun { program: r.program.into(), args: r.args, script: r.script });
    Ok(daemon::run_daemon(run, script, daemon_stop().clone()).await)
}

/// For the session daemon, first thing: makes it non-dumpable, stamps its log
/// lines with the time, and reads what `daemonSpawn` wrote to its stdin (the
/// CLI sends one JSON line with the API key and the session's spec, which
/// stay off the daemon's command line and environment; empty when none came).
#[napi]
pub fn session_daemon_secret() -> Result<String> {
    aluvia_core::log::stamp_lines();
    daemon::take_secret().map_err(|e| to_napi(AluviaError::Internal(format!("could not read the daemon's input: {e}"))))
}

/// One line of the session daemon's log, written as the engine writes its own.
#[napi]
pub fn session_daemon_log(msg: String) {
    aluvia_core::log::write_line(&msg);
}

/// Asks this process's session daemon to stop with `code` (the first request wins).
#[napi]
pub fn session_daemon_stop(code: i32, reason: String) {
    daemon_stop().request(code, reason);
}

/// `session close` of `name`: `{ outcome, lock }` with outcome `exited`,
/// `forceKilled` or `notRunning`, and the lock of the process stopped (null
/// when the lock went away first); see `daemon::close_session`. SIGKILL
/// follows SIGTERM after `store::DEFAULT_GRACE`.
#[napi]
pub async fn session_close(name: String) -> Result<Value> {
    let dir = blocking(lock_dir).await?;
    match daemon::close_session(&dir, &name, store::DEFAULT_GRACE, daemon::HANDOVER_WAIT).await.map_err(to_napi)? {
        daemon::Closed::Stopped { termination, lock } => {
            Ok(serde_json::json!({ "outcome": termination.as_str(), "lock": lock_json(&lock)? }))
        }
        daemon::Closed::Gone => Ok(serde_json::json!({ "outcome": "notRunning", "lock": null })),
        daemon::Closed::StillStarting => Err(session_err(store::SessionError::StillStarting { name })),
    }
}

/// The idle timeout of `session start` in ms (`null`: never): `given`
/// (`--idle-timeout` / MCP `idleTimeout`), else 1 h for a headless session
/// without a script.
#[napi]
pub fn session_idle_timeout(given: Option<String>, headful: bool, script: bool) -> Result<Option<f64>> {
    let timeout = daemon::idle_timeout(given.as_deref(), headful, script).map_err(to_napi)?;
    Ok(timeout.map(|d| d.as_millis() as f64))
}

/// `session start --profile`: the in-use error (with `browserSession`)
/// when the profile is held now, or its name's error.
#[napi]
pub async fn profile_check(home: String, name: String) -> Result<()> {
    blocking(move || aluvia_core::profile::check_free(std::path::Path::new(&home), &name).map_err(session_err)).await
}

/// `aluvia profile list`: `[{name, sizeBytes, lastUsed, inUseBy}]`.
#[napi]
pub async fn profile_list(home: String) -> Result<Value> {
    blocking(move || {
        let list = aluvia_core::profile::list(std::path::Path::new(&home)).map_err(session_err)?;
        serde_json::to_value(list).map_err(json_err)
    })
    .await
}

/// `aluvia profile delete <name>`.
#[napi]
pub async fn profile_delete(home: String, name: String) -> Result<()> {
    blocking(move || aluvia_core::profile::delete(std::path::Path::new(&home), &name).map_err(session_err)).await
}

/// `--connection-id` of `session start` (see `config::cli_connection_id`):
/// the id, or `null` when it is not one.
#[napi]
pub fn parse_connection_id(text: String) -> Option<f64> {
    aluvia_core::config::cli_connection_id(&text).map(|id| id as f64)
}
