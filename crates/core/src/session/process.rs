//! Process liveness and termination.

use std::io;
use std::time::{Duration, Instant};

use crate::error::{AluviaError, Result};

/// How often [`terminate`] checks whether the process is gone.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long `session close` waits after SIGTERM before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How long [`terminate`] waits for the process to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);

fn to_pid(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)
}

/// `kill(pid, 0)`: alive when it succeeds or fails with EPERM (someone else's
/// process). pid 0 and pids above `i32::MAX` are never alive (they would name
/// process groups). On Linux an exited but unreaped process (a zombie) counts
/// as dead.
pub fn is_process_alive(pid: u32) -> bool {
    let Some(p) = to_pid(pid) else { return false };
    // SAFETY: signal 0 only checks for existence and permission.
    let alive = unsafe { libc::kill(p, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive && !is_zombie(p)
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: libc::pid_t) -> bool {
    // `pid (comm) S ...`: comm may itself contain ") ", so take the last one.
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else { return false };
    let Some(close) = stat.iter().rposition(|&b| b == b')') else { return false };
    matches!(stat.get(close + 2), Some(b'Z') | Some(b'X'))
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(_pid: libc::pid_t) -> bool {
    false
}

/// How [`terminate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited within the grace period after SIGTERM.
    Exited,
    /// It needed SIGKILL.
    ForceKilled,
    /// It was not running to begin with.
    NotRunning,
}

impl Termination {
    /// As the CLI's close reports it: `exited`, `forceKilled` or `notRunning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Exited => "exited",
            Termination::ForceKilled => "forceKilled",
            Termination::NotRunning => "notRunning",
        }
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall; pid is positive or a negated process group id.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `session close`: SIGTERM, then poll liveness every [`POLL_INTERVAL`] for up
/// to `grace`, then SIGKILL. When the process leads its own process group (a
/// daemon started by [`super::spawn_daemon`] does), SIGKILL goes to the whole
/// group so its Chromium dies with it.
pub async fn terminate(pid: u32, grace: Duration) -> Result<Termination> {
    let Some(p) = to_pid(pid) else { return Ok(Termination::NotRunning) };
    if !is_process_alive(pid) {
        return Ok(Termination::NotRunning);
    }
    match signal(p, libc::SIGTERM) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Termination::NotRunning),
        Err(e) => return Err(AluviaError::Internal(format!("Could not send SIGTERM to process {pid}: {e}"))),
    }
    let deadline = Instant::now() + grace;
    loop {
        if !is_process_alive(pid) {
            return Ok(Termination::Exited);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }

    // SAFETY: plain syscall.
    let leads_group = unsafe { libc::getpgid(p) } == p;
    let target = if leads_group { -p } else { p };
    match signal(target, libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Termination::Exited),
        Err(e) => return Err(AluviaError::Internal(format!("Could not send SIGKILL to process {pid}: {e}"))),
    }
    let deadline = Instant::now() + KILL_WAIT;
    while is_process_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Termination::ForceKilled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testutil::dead_pid;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    #[test]
    fn session_liveness() {
        assert!(is_process_alive(std::process::id()));
        assert!(is_process_alive(1), "pid 1 exists (EPERM or not) ");
        assert!(!is_process_alive(0));
        assert!(!is_process_alive(u32::MAX));
        assert!(!is_process_alive(i32::MAX as u32 + 1));
        assert!(!is_process_alive(dead_pid()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn session_zombie_counts_as_dead() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!is_process_alive(pid));
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::kill(pid as i32, 0) }, 0, "still a zombie, not reaped");
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn session_terminate_not_running() {
        assert_eq!(terminate(dead_pid(), Duration::from_millis(100)).await.unwrap(), Termination::NotRunning);
        assert_eq!(terminate(0, Duration::from_millis(100)).await.unwrap(), Termination::NotRunning);
    }

    #[tokio::test]
    async fn session_terminate_exits_on_sigterm() {
        let mut child = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        let outcome = terminate(child.id(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(outcome, Termination::Exited);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn session_terminate_force_kills_after_grace() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo up; while :; do sleep 1; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the trap is installed.
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "up\n");
        let started = Instant::now();
        let outcome = terminate(child.id(), Duration::from_millis(300)).await.unwrap();
        assert_eq!(outcome, Termination::ForceKilled);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
