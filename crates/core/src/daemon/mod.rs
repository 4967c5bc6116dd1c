//! The CLI's background browser sessions as processes: the launcher that
//! `session start` runs in the CLI process, the daemon it spawns, and `session
//! close`.
//!
//! - `launcher.rs` (CLI process): [`spawn_daemon`] starts a detached daemon
//!   and waits on a pipe until it calls [`signal_ready`].
//! - `run.rs` (daemon): [`run_daemon`] is that daemon's life, from its first
//!   lock write to the lock's removal; `sync.rs` keeps its lock file current.
//! - `script.rs` (daemon): a `--run` script's child process.
//! - `idle.rs` (both): the idle timeout, as given and as it runs out.
//! - `ready.rs` (both): the pipe protocol between the two.
//! - [`close_session`] (CLI process) is `session close`.
//!
//! Unix only.
#![cfg(unix)]

mod close;
mod idle;
mod launcher;
mod ready;
mod run;
mod script;
mod sync;

pub use close::{close_session, Closed, HANDOVER_WAIT};
pub use idle::{format_duration, idle_timeout, parse_idle_timeout, DEFAULT_IDLE_TIMEOUT};
pub use launcher::{
    native_daemon_beside, spawn_daemon, DaemonReady, DaemonSpawn, LaunchError, API_KEY_ENV, DEFAULT_READY_TIMEOUT,
    NATIVE_DAEMON,
};
pub use ready::{prepare_ready_fd, signal_failed, signal_ready, take_secret, READY_FD_ENV};
pub use run::{run_daemon, stop_on_signals, DaemonExit, DaemonRun, DaemonStop, DAEMON_POLL_INTERVAL_MS};
pub use script::{ScriptRun, SCRIPT_GRACE};
pub use sync::{start_lock_sync, LockSync, Status, TRAFFIC_INTERVAL};
