//! The lock directory (`{os tmpdir}/aluvia-sdk`) and what it stores: the
//! `cli-{name}.lock` records of the CLI's background browser sessions, their
//! logs, session naming and the identity of the process a record names. Every
//! process that deals with sessions uses it: the CLI, the MCP server, a
//! `connect()`, a session daemon.
//!
//! - [`LockDir`] (`dir.rs`) opens (and refuses an unsafe) lock directory.
//! - [`LockData`] (`record.rs`) is a `cli-{name}.lock` file's JSON.
//! - `io.rs`: [`LockDir`] reads, writes, updates, lists and removes lock files,
//!   atomically and under an exclusive `fs2` lock on `.dir.lock` in the
//!   directory; `sweep.rs`: it removes stale ones ([`LockDir::live_sessions`]);
//!   `claims.rs`: it claims names ([`LockDir::claim`]); `logs.rs`: it prunes
//!   old logs; `rules_lock.rs`: [`LockDir::lock_rules`] takes the
//!   per-connection `rules-{id}.lock` that serializes rule edits on this
//!   machine.
//! - `owned.rs`: temp folders named after their owner process (Chromium
//!   profiles, `--run` scripts' temp folders), and the sweep of those whose
//!   owner is gone.
//! - [`generate_name`] and [`validate_session_name`] implement the naming rules.
//! - [`is_process_alive`] and [`terminate`] deal with the processes a record
//!   names; [`resolve_session`] finds the session a command means.
//! - [`SessionError`] (`session_error.rs`) is how any of that fails.
//!
//! Unix only.
#![cfg(unix)]

mod claims;
mod dir;
mod io;
mod logs;
mod naming;
mod owned;
mod process;
mod record;
mod resolve;
mod rules_lock;
mod session_error;
mod sweep;
#[cfg(test)]
mod tests;

pub use dir::{default_path, os_tmpdir, LockDir, LOCK_DIR_NAME};
pub use logs::{KEEP_LOGS, MAX_LOG_AGE};
pub use naming::{
    generate_name, validate_session_name, NameState, ADJECTIVES, INVALID_NAME_MESSAGE, MAX_NAME_ATTEMPTS, MAX_NAME_LEN,
    NOUNS,
};
pub use owned::{create_owned_dir, sweep_orphaned_dirs, RUN_DIR_PREFIX};
#[cfg(target_os = "linux")]
pub use process::{die_with_parent, die_with_parent_by};
pub use process::{
    is_process_alive, is_recorded_process, is_session_daemon, process_start, terminate, Termination, DEFAULT_GRACE,
    POLL_INTERVAL,
};
pub use record::{parse_lock, LockData, LockRead, PROFILE_DIR_PREFIX};
pub use resolve::{resolve_session, Purpose};
pub use rules_lock::RulesLock;
pub use session_error::{Holder, SessionError};
pub use sweep::LiveSessions;

#[cfg(test)]
pub(crate) mod testutil {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::LockDir;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "aluvia-session-test-{tag}-{}-{n}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::DirBuilder::new().mode(0o700).create(&path).expect("create test dir");
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// A lock directory inside this temp dir.
        pub(crate) fn lock_dir(&self) -> LockDir {
            LockDir::open_at(self.0.join("aluvia-sdk")).expect("open lock dir")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The pid of a process that has exited and been reaped.
    pub(crate) fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait true");
        pid
    }
}
