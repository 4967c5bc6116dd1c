//! Process liveness and termination.

use std::io;
use std::time::{Duration, Instant};

use crate::error::{AluviaError, Result};

/// How often [`terminate`] checks whether the process is gone.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

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

/// What tells a process apart from a later one that reuses its pid, as a lock
/// file records it (`processStart`): on Linux the boot id and the start time
/// in clock ticks (field 22 of `/proc/<pid>/stat`), on macOS the start time
/// `proc_pidinfo` reports. `None` when it cannot be read (no such process)
/// or the platform offers nothing.
pub fn process_start(pid: u32) -> Option<String> {
    let p = to_pid(pid)?;
    start_of(p)
}

#[cfg(target_os = "linux")]
fn start_of(pid: libc::pid_t) -> Option<String> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    // Fields after `comm` start with the third (state): field 22 is the 20th.
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let start: u64 = rest.split_ascii_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(format!("{}:{start}", boot.trim()))
}

#[cfg(target_os = "macos")]
fn start_of(pid: libc::pid_t) -> Option<String> {
    // SAFETY: an all-zero `proc_bsdinfo` (plain integers and arrays) is a valid value.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = libc::c_int::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).ok()?;
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(pid, libc::PROC_PIDTBSDINFO, 0, (&mut info as *mut libc::proc_bsdinfo).cast(), size)
    };
    (n == size).then(|| format!("{}.{:06}", info.pbi_start_tvsec, info.pbi_start_tvusec))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn start_of(_pid: libc::pid_t) -> Option<String> {
    None
}

/// Whether `pid` is alive and is the process `start` ([`process_start`])
/// recorded. Without a record (a lock of an older version) only the pid is
/// checked.
pub fn is_recorded_process(pid: u32, start: Option<&str>) -> bool {
    is_process_alive(pid) && start.is_none_or(|recorded| process_start(pid).as_deref() == Some(recorded))
}

/// For a child's `pre_exec` (Linux): it dies with the thread that started it
/// (SIGKILL as parent-death signal), and fails to start when that parent is
/// already gone. Async-signal-safe: prctl and getppid only.
#[cfg(target_os = "linux")]
pub fn die_with_parent() -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    die_with_parent_by(libc::SIGKILL)
}

/// [`die_with_parent`] with another parent-death signal (SIGTERM lets a
/// browser save what it holds before it ends).
#[cfg(target_os = "linux")]
pub fn die_with_parent_by(signal: libc::c_int) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let parent = std::process::id() as libc::pid_t;
    move || {
        // SAFETY: prctl and getppid have no memory effects and are
        // async-signal-safe, as the time between fork and exec requires.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect. (Not
            // `getppid() == 1`: the parent may itself be PID 1, in a container.)
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
        }
        Ok(())
    }
}

/// How the session daemon's script is named on its command line (`node
/// …/lib/cli/daemon.js`, in this version and the older ones).
const DAEMON_SCRIPT: &str = "cli/daemon.js";

/// The native session daemon's program name (`daemon::NATIVE_DAEMON`; the
/// store sits below the daemon layer).
const DAEMON_PROGRAM: &str = "aluvia-daemon";

/// Whether `pid`'s command line is an aluvia session daemon's: the native
/// daemon's program, or one of its arguments is the daemon's script. What
/// counts for a lock written without [`process_start`] (an older version),
/// whose pid alone may by now name any process. `false` when the command
/// line cannot be read.
pub fn is_session_daemon(pid: u32) -> bool {
    let is_daemon_script = |arg: &str| arg == DAEMON_SCRIPT || arg.ends_with(&format!("/{DAEMON_SCRIPT}"));
    let is_program = |arg: &str| arg == DAEMON_PROGRAM || arg.ends_with(&format!("/{DAEMON_PROGRAM}"));
    command_line(pid).is_some_and(|args| {
        args.first().is_some_and(|a| is_program(a)) || args.iter().skip(1).any(|a| is_daemon_script(a))
    })
}

#[cfg(target_os = "linux")]
fn command_line(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", to_pid(pid)?)).ok()?;
    Some(raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

#[cfg(not(target_os = "linux"))]
fn command_line(pid: u32) -> Option<Vec<String>> {
    // `ps` joins the arguments with spaces: good enough to find the script's path.
    let out = std::process::Command::new("ps")
        .args(["-ww", "-o", "command=", "-p", &to_pid(pid)?.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let args: Vec<String> = text.split_whitespace().map(String::from).collect();
    (!args.is_empty()).then_some(args)
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
/// daemon started by [`crate::daemon::spawn_daemon`] does), SIGKILL goes to the whole
/// group so its Chromium dies with it.
///
/// With `start` ([`process_start`] as recorded) nothing is signalled unless
/// `pid` is still that process: a pid that now names another process counts
/// as not running (before SIGTERM) or as exited (before SIGKILL).
pub async fn terminate(pid: u32, start: Option<&str>, grace: Duration) -> Result<Termination> {
    let Some(p) = to_pid(pid) else { return Ok(Termination::NotRunning) };
    let running = || is_recorded_process(pid, start);
    if !running() {
        return Ok(Termination::NotRunning);
    }
    match signal(p, libc::SIGTERM) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Termination::NotRunning),
        Err(e) => return Err(AluviaError::Internal(format!("Could not send SIGTERM to process {pid}: {e}"))),
    }
    let deadline = Instant::now() + grace;
    loop {
        if !running() {
            return Ok(Termination::Exited);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }

    if !running() {
        return Ok(Termination::Exited);
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
    while running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Termination::ForceKilled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::dead_pid;
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

    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[tokio::test]
    async fn session_a_reused_pid_is_not_the_recorded_process() {
        let me = process_start(std::process::id()).expect("own start");
        assert_eq!(process_start(std::process::id()).as_deref(), Some(me.as_str()), "stable");
        assert_eq!(process_start(dead_pid()), None);
        assert_eq!(process_start(0), None);
        let mut child = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().unwrap();
        let pid = child.id();
        let theirs = process_start(pid).expect("child start");
        assert!(is_recorded_process(pid, Some(&theirs)));
        assert!(is_recorded_process(pid, None), "no record: the pid alone");
        // The pid now names another process than the one recorded (a start
        // altered rather than borrowed: two processes can start in one tick).
        let other = format!("{theirs}0");
        assert!(!is_recorded_process(pid, Some(&other)));
        let outcome = terminate(pid, Some(&other), Duration::from_millis(100)).await.unwrap();
        assert_eq!(outcome, Termination::NotRunning);
        assert!(child.try_wait().unwrap().is_none(), "not signalled");
        assert_eq!(terminate(pid, Some(&theirs), Duration::from_secs(5)).await.unwrap(), Termination::Exited);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn session_terminate_not_running() {
        assert_eq!(terminate(dead_pid(), None, Duration::from_millis(100)).await.unwrap(), Termination::NotRunning);
        assert_eq!(terminate(0, None, Duration::from_millis(100)).await.unwrap(), Termination::NotRunning);
    }

    #[tokio::test]
    async fn session_terminate_exits_on_sigterm() {
        let mut child = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        let outcome = terminate(child.id(), None, Duration::from_secs(5)).await.unwrap();
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
        let outcome = terminate(child.id(), None, Duration::from_millis(300)).await.unwrap();
        assert_eq!(outcome, Termination::ForceKilled);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
