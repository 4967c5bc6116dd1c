//! `session close`: stop the process a session's lock names and remove the
//! lock.
//!
//! Until `session start` hands its claimed lock to the daemon it spawned, the
//! lock names the starting process. When that is this very process (the MCP
//! server starting and closing at once), the close waits for the hand-over
//! rather than signal itself. When the hand-over lands while the starter is
//! being stopped, the daemon it handed over to is stopped too.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::error::Result;
use crate::store::{is_session_daemon, process_start, terminate, Termination};
use crate::store::{sweep_orphaned_dirs, LockDir};
use crate::store::{LockData, LockRead};
use crate::task::off_thread;

/// How long a close waits for a start in this process to hand its claimed
/// lock to the daemon.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// How [`close_session`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// The process `lock` named was stopped (or was not running) and the lock
    /// is gone.
    Stopped { termination: Termination, lock: Box<LockData> },
    /// The lock went away before anything was signalled (a start that failed).
    Gone,
    /// A start in this process still holds the claim after the wait.
    StillStarting,
}

async fn read_lock(dir: &LockDir, name: &str) -> Result<Option<LockData>> {
    let (dir, name) = (dir.clone(), name.to_string());
    off_thread(move || {
        Ok(match dir.read(&name)? {
            Some(LockRead::Valid(lock)) => Some(lock),
            _ => None,
        })
    })
    .await
}

/// Stops the process `lock` names, only while it is that process (see
/// [`terminate`]), then removes the lock if it still names that pid. A lock
/// without `processStart` (an older version's) names a process only while
/// its command line is a session daemon's; that process is then held to its
/// start, so that a pid reused meanwhile is never signalled either.
async fn stop(dir: &LockDir, name: &str, lock: &LockData, grace: Duration) -> Result<(Termination, bool)> {
    let pid = lock.pid;
    let start = match &lock.process_start {
        Some(start) => Some(Some(start.clone())),
        // The start read between two checks is a daemon's.
        None if is_session_daemon(pid) => Some(process_start(pid)).filter(|_| is_session_daemon(pid)),
        None => None,
    };
    let termination = match start {
        Some(start) => terminate(pid, start.as_deref(), grace).await?,
        None => Termination::NotRunning,
    };
    let (dir, name) = (dir.clone(), name.to_string());
    let removed = off_thread(move || {
        let removed = dir.remove_if_owned(&name, pid);
        // What a killed daemon left in the temp folder (named after it).
        sweep_orphaned_dirs();
        removed
    })
    .await?;
    Ok((termination, removed))
}

/// Stops session `name`: SIGTERM, SIGKILL to its process group after `grace`
/// (see [`terminate`]), then its lock (and a dead owner's Chromium profile)
/// is removed. Waits up to `handover_wait` while the lock names this process.
pub async fn close_session(dir: &LockDir, name: &str, grace: Duration, handover_wait: Duration) -> Result<Closed> {
    let me = std::process::id();
    let deadline = Instant::now() + handover_wait;
    let mut lock = read_lock(dir, name).await?;
    while lock.as_ref().is_some_and(|l| l.pid == me) {
        if Instant::now() >= deadline {
            return Ok(Closed::StillStarting);
        }
        sleep(Duration::from_millis(50)).await;
        lock = read_lock(dir, name).await?;
    }
    let Some(lock) = lock else { return Ok(Closed::Gone) };
    let (termination, removed) = stop(dir, name, &lock, grace).await?;
    if !removed && lock.ready != Some(true) {
        // The pid stopped was the starter; the lock now names its daemon.
        if let Some(daemon) = read_lock(dir, name).await?.filter(|d| d.pid != lock.pid && d.pid != me) {
            let (termination, _) = stop(dir, name, &daemon, grace).await?;
            return Ok(Closed::Stopped { termination, lock: Box::new(daemon) });
        }
    }
    Ok(Closed::Stopped { termination, lock: Box::new(lock) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{dead_pid, TempDir};

    const GRACE: Duration = Duration::from_secs(2);

    fn lock(pid: u32) -> LockData {
        serde_json::from_value(serde_json::json!({ "pid": pid, "ready": true })).unwrap()
    }

    #[tokio::test]
    async fn closing_stops_the_process_and_removes_the_lock() {
        let tmp = TempDir::new("close-stop");
        let dir = tmp.lock_dir();
        let mut child = tokio::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id().unwrap();
        let running = LockData { process_start: process_start(pid), ..lock(pid) };
        dir.write("running", &running).unwrap();
        let closed = close_session(&dir, "running", GRACE, HANDOVER_WAIT).await.unwrap();
        assert_eq!(closed, Closed::Stopped { termination: Termination::Exited, lock: Box::new(running) });
        assert!(child.wait().await.unwrap().code().is_none(), "ended by a signal");
        assert!(dir.read("running").unwrap().is_none());

        let gone = dead_pid();
        dir.write("dead", &lock(gone)).unwrap();
        let closed = close_session(&dir, "dead", GRACE, HANDOVER_WAIT).await.unwrap();
        assert_eq!(closed, Closed::Stopped { termination: Termination::NotRunning, lock: Box::new(lock(gone)) });
        assert!(dir.read("dead").unwrap().is_none(), "a dead owner's lock is cleaned up");
        assert_eq!(close_session(&dir, "missing", GRACE, HANDOVER_WAIT).await.unwrap(), Closed::Gone);
    }

    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[tokio::test]
    async fn closing_never_signals_a_process_that_reused_the_pid() {
        let tmp = TempDir::new("close-reused");
        let dir = tmp.lock_dir();
        let mut child = tokio::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id().unwrap();
        // The lock names the pid, recorded with another start than its own
        // (altered rather than borrowed: two processes can start in one tick).
        let recorded = crate::store::process_start(pid).map(|s| format!("{s}0"));
        dir.write("reused", &LockData { process_start: recorded, ..lock(pid) }).unwrap();
        let closed = close_session(&dir, "reused", GRACE, HANDOVER_WAIT).await.unwrap();
        assert!(matches!(closed, Closed::Stopped { termination: Termination::NotRunning, .. }), "{closed:?}");
        assert!(dir.read("reused").unwrap().is_none(), "the stale lock is removed");
        assert!(child.try_wait().unwrap().is_none(), "the process is left alone");
        child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_without_process_start_names_only_a_session_daemon() {
        let tmp = TempDir::new("close-old");
        let dir = tmp.lock_dir();
        // An older version's lock, whose pid now names something else.
        let mut other = tokio::process::Command::new("sleep").arg("30").spawn().unwrap();
        let old = lock(other.id().unwrap());
        dir.write("old", &old).unwrap();
        assert!(!old.is_live());
        let closed = close_session(&dir, "old", GRACE, HANDOVER_WAIT).await.unwrap();
        assert_eq!(closed, Closed::Stopped { termination: Termination::NotRunning, lock: Box::new(old) });
        assert!(dir.read("old").unwrap().is_none(), "the stale lock is removed");
        assert!(other.try_wait().unwrap().is_none(), "the process is left alone");
        other.kill().await.unwrap();

        // A daemon's command line: stopped.
        let script = tmp.path().join("lib/cli/daemon.js");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        let mut daemon = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30; true", &script.display().to_string()])
            .spawn()
            .unwrap();
        let old = lock(daemon.id().unwrap());
        // Once it has exec'd.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !crate::store::is_session_daemon(old.pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        assert!(old.is_live());
        dir.write("daemon", &old).unwrap();
        let closed = close_session(&dir, "daemon", GRACE, HANDOVER_WAIT).await.unwrap();
        assert_eq!(closed, Closed::Stopped { termination: Termination::Exited, lock: Box::new(old) });
        assert!(daemon.wait().await.unwrap().code().is_none(), "ended by a signal");
    }

    #[tokio::test]
    async fn a_claim_of_this_process_is_never_signalled() {
        let tmp = TempDir::new("close-self");
        let dir = tmp.lock_dir();
        let claim = LockData { ready: None, ..lock(std::process::id()) };
        dir.write("starting", &claim).unwrap();
        let closed = close_session(&dir, "starting", GRACE, Duration::from_millis(200)).await.unwrap();
        assert_eq!(closed, Closed::StillStarting);
        assert!(dir.read("starting").unwrap().is_some(), "the claim is left to its start");
    }
}
