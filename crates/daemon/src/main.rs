//! `aluvia-daemon`: the background process of one CLI browser session,
//! spawned by `aluvia session start` (fd 3 is the ready pipe; stdout and
//! stderr are the session's log file). The whole session is the engine's
//! [`run_daemon`]: the proxy, Chromium, detection, the lock file, the ready
//! signal, SIGTERM/SIGINT, a `--run` script's Node child, shutdown. Without
//! Node in between it weighs a fraction of a Node process.
//!
//! What it runs comes on stdin, never on its command line (which every user
//! sees in `ps`) nor in its environment: one JSON line `{apiKey, spec}`, read
//! after it made itself undumpable. The key is never logged.

use std::process::ExitCode;

use aluvia_core::client::{RawClientOptions, RawId};
use aluvia_core::daemon::{self, DaemonRun, DaemonStop, ScriptRun};
use aluvia_core::store::LockDir;
use serde::Deserialize;

/// The line `session start` writes to stdin.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    #[serde(default)]
    api_key: Option<String>,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    name: String,
    url: String,
    #[serde(default)]
    headful: bool,
    #[serde(default = "yes")]
    block_detection: bool,
    #[serde(default)]
    auto_unblock: bool,
    #[serde(default)]
    unblock_steps: Option<Vec<String>>,
    #[serde(default)]
    unblock_geos: Option<Vec<String>>,
    #[serde(default)]
    connection_id: Option<f64>,
    #[serde(default)]
    browser: Option<String>,
    /// The `--run` script's absolute path.
    #[serde(default)]
    run: Option<String>,
    /// How to run a script: the program (Node) and its arguments.
    #[serde(default)]
    runner: Option<Runner>,
    /// The idle timeout in ms (absent or null: never).
    #[serde(default)]
    idle_timeout_ms: Option<u64>,
    /// The persistent profile, and the home directory it lives in.
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    home: Option<String>,
}

#[derive(Deserialize)]
struct Runner {
    program: String,
    #[serde(default)]
    args: Vec<String>,
}

fn yes() -> bool {
    true
}

fn log(msg: &str) {
    aluvia_core::log::write_line(msg);
}

fn main() -> ExitCode {
    aluvia_core::log::stamp_lines();
    let input = match daemon::take_secret() {
        Ok(text) => text,
        Err(e) => {
            log(&format!("error: could not read the daemon's input: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let Input { api_key, spec } = match serde_json::from_str(&input) {
        Ok(input) => input,
        // The input holds the key: its parse error is not shown.
        Err(_) => {
            log("error: the daemon's input is not what session start writes");
            return ExitCode::FAILURE;
        }
    };
    drop(input);
    // One thread for everything asynchronous (the proxy, CDP, the API) plus
    // tokio's blocking pool for files and processes: a session's daemon is
    // mostly idle, and every thread costs memory.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log(&format!("error: could not start the engine's runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let dir = match LockDir::open_default() {
            Ok(dir) => dir,
            Err(e) => {
                log(&format!("error: {e}"));
                return 1;
            }
        };
        let script = match (spec.run, spec.runner) {
            (Some(script), Some(runner)) => {
                Some(ScriptRun { program: runner.program.into(), args: runner.args, script })
            }
            (Some(_), None) => {
                log("error: a --run script came without its runner");
                return 1;
            }
            _ => None,
        };
        let run = DaemonRun {
            dir,
            name: spec.name,
            url: spec.url,
            headful: spec.headful,
            block_detection: spec.block_detection,
            auto_unblock: spec.auto_unblock,
            unblock_steps: spec.unblock_steps,
            unblock_geos: spec.unblock_geos,
            client: RawClientOptions {
                api_key: api_key.unwrap_or_default(),
                connection_id: spec.connection_id.map(RawId::Number),
                browser: spec.browser,
                ..RawClientOptions::default()
            },
            handle_signals: true,
            idle_timeout: spec.idle_timeout_ms.filter(|ms| *ms > 0).map(std::time::Duration::from_millis),
            profile: spec.profile,
            home: spec.home,
        };
        daemon::run_daemon(run, script, DaemonStop::new()).await
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
