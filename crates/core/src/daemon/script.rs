//! A `--run` script's process: a child of the daemon (Node running the
//! runner, `lib/cli/script.js`) that reaches the browser over CDP the way
//! `connect()` does. Apart from the daemon the script can neither take its
//! signals nor block it: whatever the script does (its own SIGTERM handler, a
//! loop that never ends), the daemon stops it and closes the session
//! gracefully.
//!
//! The child gets the script's path and the CDP URL on its stdin (never on
//! its command line), no API key, and a temp folder of its own as `TMPDIR`
//! (named after the daemon, so that a sweep removes it when the daemon is
//! killed; removed when the script ends). Its stdout and stderr become lines
//! of the daemon's log. It dies with the daemon (parent-death signal) and is
//! in the daemon's process group (a force-kill takes it too).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::launcher::API_KEY_ENV;
use super::ready::READY_FD_ENV;
use super::run::DaemonExit;
use crate::store::{create_owned_dir, RUN_DIR_PREFIX};

/// How long a script gets to end after SIGTERM before SIGKILL.
pub const SCRIPT_GRACE: Duration = Duration::from_secs(1);

/// How long the script's output may trail its exit (a grandchild holding the pipes).
const OUTPUT_WAIT: Duration = Duration::from_secs(1);

/// The runner's exit codes beyond 0 (finished) and 1 (the script threw).
const UNCAUGHT_EXCEPTION: i32 = 2;
const UNHANDLED_REJECTION: i32 = 3;

/// How to run a `--run` script.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The runner: the program (Node) and its arguments.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The script's absolute path.
    pub script: String,
}

/// A running script.
pub(super) struct ScriptChild {
    child: Child,
    tmp: PathBuf,
    output: Vec<JoinHandle<()>>,
}

impl ScriptChild {
    /// Starts the runner for `run` against the browser at `cdp_url`. Must be
    /// called on a thread that lives as long as the daemon (a runtime worker):
    /// the child's parent-death signal follows that thread.
    pub(super) fn start(run: &ScriptRun, cdp_url: &str) -> std::io::Result<ScriptChild> {
        let tmp = create_owned_dir(RUN_DIR_PREFIX)?;
        let mut cmd = Command::new(&run.program);
        cmd.args(&run.args)
            .env("TMPDIR", &tmp)
            .env_remove(READY_FD_ENV)
            .env_remove(API_KEY_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure is async-signal-safe (see `die_with_parent`).
        unsafe {
            cmd.pre_exec(crate::store::die_with_parent());
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let input = serde_json::json!({ "script": run.script, "cdpUrl": cdp_url }).to_string() + "\n";
        if let Some(mut stdin) = child.stdin.take() {
            // A runner that died early is reported by its exit.
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
            });
        }
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            output.push(tokio::spawn(log_lines(out)));
        }
        if let Some(err) = child.stderr.take() {
            output.push(tokio::spawn(log_lines(err)));
        }
        Ok(ScriptChild { child, tmp, output })
    }

    /// Waits until the script ends: how the daemon ends then.
    pub(super) async fn wait(&mut self) -> DaemonExit {
        let status = self.child.wait().await;
        self.drain().await;
        match status {
            Ok(status) => exit_for(status),
            Err(e) => DaemonExit::new(1, format!("script lost: {e}")),
        }
    }

    /// Stops the script: SIGTERM, SIGKILL after [`SCRIPT_GRACE`].
    pub(super) async fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: plain syscall; the child is not reaped yet, so `pid` is still it.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if tokio::time::timeout(SCRIPT_GRACE, self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
        self.drain().await;
    }

    /// Its output logged to the end (or for [`OUTPUT_WAIT`]), and its temp folder removed.
    async fn drain(&mut self) {
        for task in self.output.drain(..) {
            let _ = tokio::time::timeout(OUTPUT_WAIT, task).await;
        }
        let tmp = self.tmp.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(tmp)).await;
    }
}

fn exit_for(status: ExitStatus) -> DaemonExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => DaemonExit::new(0, "script finished"),
        (Some(UNCAUGHT_EXCEPTION), _) => DaemonExit::new(1, "uncaught exception"),
        (Some(UNHANDLED_REJECTION), _) => DaemonExit::new(1, "unhandled rejection"),
        (Some(_), _) => DaemonExit::new(1, "script failed"),
        (None, Some(signal)) => DaemonExit::new(1, format!("script killed by signal {signal}")),
        (None, None) => DaemonExit::new(1, "script ended"),
    }
}

/// Every line of `stream` as a line of the daemon's log.
async fn log_lines(stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        crate::log::write_line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
    }
}
