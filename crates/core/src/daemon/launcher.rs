//! The daemon launcher, which runs in the CLI process: a detached child in
//! its own session with its output in the session's log file, the API key on
//! its stdin and the ready pipe on its fd 3 (see `ready.rs`). The launcher
//! returns as soon as the ready line arrives, fails as soon as the pipe closes
//! without it (the child died; with the reason it sent, if any), and gives up
//! after a timeout.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ready::{last_error, ready_pipe, wait_ready, Outcome, READY_FD, READY_FD_ENV};
use crate::error::AluviaError;
use crate::store::{is_recorded_process, process_start, LockData, LockDir, SessionError, KEEP_LOGS, MAX_LOG_AGE};
use crate::task::off_thread;

/// The API key's environment variable, taken out of the daemon's environment.
pub const API_KEY_ENV: &str = "ALUVIA_API_KEY";

/// How long `session start` waits for the daemon to be ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The native session daemon's file name.
pub const NATIVE_DAEMON: &str = "aluvia-daemon";

/// The native daemon beside the shared object that holds `code` (an address
/// in the engine's addon): a build from source puts both in the package's
/// root, an install in the platform package. `None` when there is no
/// executable file of that name there.
pub fn native_daemon_beside(code: usize) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: an all-zero Dl_info is a valid value for dladdr to fill.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only looks `code` up as an address (it never reads
    // through it) and fills `info`.
    if unsafe { libc::dladdr(code as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set `dli_fname` to a NUL-terminated path it owns.
    let object = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let object = PathBuf::from(std::ffi::OsStr::from_bytes(object.to_bytes()));
    let program = object.parent()?.join(NATIVE_DAEMON);
    let meta = std::fs::metadata(&program).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(program)
}

/// How to start a session daemon.
#[derive(Debug, Clone)]
pub struct DaemonSpawn {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to (or overriding) this process's environment; [`API_KEY_ENV`]
    /// is never passed on.
    pub env: Vec<(String, String)>,
    /// Written to the child's stdin, which is then closed (the API key: not
    /// in its arguments nor its environment, where other processes of the
    /// user can read them). stdin is /dev/null without it.
    pub secret: Option<String>,
    pub cwd: PathBuf,
    /// The child's stdout and stderr: created 0600 or emptied (a reused name
    /// starts a fresh log), never through a symlink, and only a regular file.
    pub log_path: PathBuf,
    /// Normally [`DEFAULT_READY_TIMEOUT`].
    pub ready_timeout: Duration,
    /// The lock directory and name this parent claimed for the daemon (the
    /// lock naming this process), if any: right after the spawn the lock's pid
    /// is switched to the daemon's, so the name stays held even if the parent
    /// goes away before the daemon's first write. See [`spawn_daemon`] for
    /// what becomes of it when the start fails.
    pub claimed_lock: Option<(LockDir, String)>,
}

/// Why [`spawn_daemon`] did not return a ready daemon. Its messages are
/// those of the [`SessionError`] it becomes ([`LaunchError::for_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The ready pipe closed without the ready line: the daemon exited (or
    /// closed its fd 3) before it was ready; `reason` is the one-line cause it
    /// sent ([`signal_failed`](super::signal_failed)), if any.
    DiedWhileStarting { pid: u32, reason: Option<String> },
    /// Not ready in time; the daemon is left running, and a claimed lock names it.
    Timeout { pid: u32 },
    /// Something other than a regular file (a FIFO, a symlink, a device) is
    /// at the log's path; nothing was started.
    LogNotRegular,
    /// It could not be started, handed its lock or waited on; whatever was
    /// started has been killed.
    Spawn(String),
}

impl LaunchError {
    /// The error of session `browser_session`, whose log is `log_file`.
    pub fn for_session(self, browser_session: String, log_file: String) -> SessionError {
        match self {
            LaunchError::DiedWhileStarting { reason, .. } => {
                SessionError::DaemonDied { browser_session, log_file, reason }
            }
            LaunchError::Timeout { .. } => SessionError::DaemonTimeout { browser_session, log_file },
            LaunchError::LogNotRegular => SessionError::LogNotRegular { browser_session, log_file },
            LaunchError::Spawn(why) => {
                SessionError::Other(AluviaError::Internal(format!("Could not start the browser session daemon: {why}")))
            }
        }
    }
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.clone().for_session(String::new(), String::new()).fmt(f)
    }
}

impl std::error::Error for LaunchError {}

/// A daemon that said it is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonReady {
    pub pid: u32,
    /// Its lock as it was when it became ready, if it sent it along.
    pub lock: Option<LockData>,
}

fn open_log(spec: &DaemonSpawn) -> Result<File, LaunchError> {
    let failed = |e: io::Error| LaunchError::Spawn(format!("could not open log file {}: {e}", spec.log_path.display()));
    // Non-blocking, so that a FIFO without a reader fails (ENXIO) instead of
    // hanging the open; not through a symlink (ELOOP).
    let file = match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&spec.log_path)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ELOOP)) => {
            return Err(LaunchError::LogNotRegular)
        }
        Err(e) => return Err(failed(e)),
    };
    if !file.metadata().map_err(failed)?.file_type().is_file() {
        return Err(LaunchError::LogNotRegular);
    }
    let prepare = || {
        // A fresh log for every session; exactly 0600, whatever the umask or
        // an older file said; blocking writes again.
        file.set_len(0)?;
        file.set_permissions(Permissions::from_mode(0o600))?;
        // SAFETY: plain fcntl calls on an fd this function owns.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: as above.
        if flags == -1 || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } == -1 {
            return Err(last_error());
        }
        Ok::<_, io::Error>(())
    };
    prepare().map_err(failed)?;
    Ok(file)
}

/// Starts the daemon and waits until it is ready: its pid (and the lock it
/// sent) as soon as it writes the ready line ([`signal_ready`](super::signal_ready)), `DiedWhileStarting` as soon as
/// the pipe closes without it, `Timeout` after `spec.ready_timeout`. The child
/// runs in its own session (`setsid`), with `spec.secret` on its stdin, stdout and
/// stderr to `spec.log_path` (emptied first), the pipe on fd 3 and
/// `ALUVIA_READY_FD=3`. A background thread reaps it, so it never lingers as a
/// zombie of this process.
///
/// With a claimed lock, a daemon is never left running without a lock that
/// names it: right after the spawn the lock (still naming this process) is
/// handed to the daemon's pid; on `Timeout` the daemon keeps running and its
/// lock stays, so `session list` and `session close` find it; when the
/// hand-over or the wait fails the daemon's process group is killed and the
/// lock removed once it is gone (only while it names the daemon); when the
/// spawn fails the lock is removed while it still names this process. All
/// lock-file work runs off the async threads.
///
/// Must be called within a tokio runtime with I/O enabled.
pub async fn spawn_daemon(spec: DaemonSpawn) -> Result<DaemonReady, LaunchError> {
    let parent = std::process::id();
    if let Some((dir, _)) = spec.claimed_lock.clone() {
        // Best effort: a start does not fail over old logs.
        let _ = off_thread(move || dir.prune_logs(KEEP_LOGS, MAX_LOG_AGE)).await;
    }
    let (pid, read_end, start) = match start_child(&spec) {
        Ok(started) => started,
        Err(e) => {
            // Nothing runs: the name this process claimed is free again.
            if let Some((dir, name)) = spec.claimed_lock.clone() {
                let _ = off_thread(move || dir.remove_if_owned(&name, parent)).await;
            }
            return Err(e);
        }
    };

    if let Some((dir, name)) = spec.claimed_lock.clone() {
        let recorded = start.clone();
        let handed = off_thread(move || {
            dir.update_owned(&name, parent, |lock| {
                lock.pid = pid;
                lock.process_start = recorded;
            })
        })
        .await;
        let why = match handed {
            Ok(Some(_)) => None,
            Ok(None) => Some("it was removed or taken over".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            abandon(pid, start.as_deref(), &spec).await;
            return Err(LaunchError::Spawn(format!(
                "could not hand the session's lock file to the daemon (pid {pid}): {why}"
            )));
        }
    }

    match wait_ready(read_end, spec.ready_timeout).await {
        Ok(Outcome::Ready(lock)) => Ok(DaemonReady { pid, lock: lock.map(|l| *l) }),
        // Left running, under its lock.
        Ok(Outcome::TimedOut) => Err(LaunchError::Timeout { pid }),
        Ok(Outcome::Closed(reason)) => {
            // The pipe closes as the process exits; the reaper follows shortly.
            if wait_gone(pid, start.as_deref(), Duration::from_secs(1)).await {
                release_lock(pid, &spec).await;
            }
            Err(LaunchError::DiedWhileStarting { pid, reason })
        }
        Err(e) => {
            abandon(pid, start.as_deref(), &spec).await;
            Err(LaunchError::Spawn(format!("could not wait for the daemon (pid {pid}): {e}")))
        }
    }
}

/// Opens the log, creates the ready pipe and spawns the child: its pid, the
/// pipe's read end and its [`process_start`].
fn start_child(spec: &DaemonSpawn) -> Result<(u32, OwnedFd, Option<String>), LaunchError> {
    let log = open_log(spec)?;
    let log_err = log
        .try_clone()
        .map_err(|e| LaunchError::Spawn(format!("could not open log file {}: {e}", spec.log_path.display())))?;
    let (read_end, write_end) =
        ready_pipe().map_err(|e| LaunchError::Spawn(format!("could not create the ready pipe: {e}")))?;
    let write_fd = write_end.as_raw_fd();

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env_remove(API_KEY_ENV)
        .env(READY_FD_ENV, READY_FD.to_string())
        .current_dir(&spec.cwd)
        .stdin(if spec.secret.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // SAFETY: the closure only makes async-signal-safe syscalls. It runs after
    // the child's stdio is in place, so fd 3 is free to take.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(last_error());
            }
            if write_fd == READY_FD {
                // Already fd 3: only let it survive the exec.
                if libc::fcntl(READY_FD, libc::F_SETFD, 0) == -1 {
                    return Err(last_error());
                }
            } else if libc::dup2(write_fd, READY_FD) == -1 {
                return Err(last_error());
            }
            Ok(())
        });
    }
    let mut child =
        cmd.spawn().map_err(|e| LaunchError::Spawn(format!("could not run {}: {e}", spec.program.display())))?;
    // Only the child may hold the write end now, so its exit closes the pipe.
    drop(write_end);
    if let (Some(secret), Some(stdin)) = (&spec.secret, child.stdin.take()) {
        hand_secret(stdin, secret.clone());
    }
    let pid = child.id();
    // Read before the reaper may let the pid go.
    let start = process_start(pid);
    reap_in_background(child);
    Ok((pid, read_end, start))
}

/// Gives up on a daemon that may be running: SIGKILL to its process group (it
/// leads one: `setsid`), then its lock is released once it is gone. A daemon
/// that cannot be killed keeps its lock, so that it can still be found.
async fn abandon(pid: u32, start: Option<&str>, spec: &DaemonSpawn) {
    match libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; the daemon (still the process started) leads process group `p`.
        Ok(p) if is_recorded_process(pid, start) => unsafe {
            libc::kill(-p, libc::SIGKILL);
        },
        _ => {}
    }
    if wait_gone(pid, start, Duration::from_secs(2)).await {
        release_lock(pid, spec).await;
    }
}

/// Removes the claimed lock while it names the (dead) daemon.
async fn release_lock(pid: u32, spec: &DaemonSpawn) {
    if let Some((dir, name)) = spec.claimed_lock.clone() {
        let _ = off_thread(move || dir.remove_if_owned(&name, pid)).await;
    }
}

/// Whether `pid` (the process `start` recorded) is gone within `wait`.
async fn wait_gone(pid: u32, start: Option<&str>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while is_recorded_process(pid, start) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Writes the secret to the child's stdin and closes it, from a thread of
/// its own (a child that never reads must not block the start); a child that
/// died before reading it is reported by the ready pipe.
fn hand_secret(mut stdin: std::process::ChildStdin, secret: String) {
    let _ = std::thread::Builder::new().name("aluvia-daemon-secret".into()).spawn(move || {
        let _ = io::Write::write_all(&mut stdin, secret.as_bytes());
    });
}

fn reap_in_background(mut child: Child) {
    // If no thread can be started the child is reaped when this process exits.
    let _ = std::thread::Builder::new().name("aluvia-daemon-reaper".into()).spawn(move || {
        let _ = child.wait();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{prepare_ready_fd, signal_ready};
    use crate::store::testutil::TempDir;
    use crate::store::{is_process_alive, terminate, Termination};
    use crate::store::{LockData, LockRead};
    use std::os::unix::fs::MetadataExt;

    fn sh(dir: &TempDir, script: &str, timeout: Duration) -> DaemonSpawn {
        DaemonSpawn {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("ALUVIA_TEST_VAR".into(), "from-parent".into())],
            cwd: dir.path().to_path_buf(),
            log_path: dir.path().join("daemon.log"),
            ready_timeout: timeout,
            secret: None,
            claimed_lock: None,
        }
    }

    fn log(dir: &TempDir) -> String {
        std::fs::read_to_string(dir.path().join("daemon.log")).unwrap()
    }

    /// Live processes whose command line contains `text`.
    fn processes_mentioning(text: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text) && is_process_alive(*pid))
            })
            .collect()
    }

    async fn wait_dead(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_process_alive(pid) {
            assert!(Instant::now() < deadline, "pid {pid} still alive");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn session_daemon_ready() {
        let dir = TempDir::new("daemon-ready");
        std::fs::write(dir.path().join("daemon.log"), "earlier run\n").unwrap();
        std::fs::set_permissions(dir.path().join("daemon.log"), Permissions::from_mode(0o644)).unwrap();
        let started = Instant::now();
        let script = "echo hi; echo \"$ALUVIA_TEST_VAR $ALUVIA_READY_FD $(pwd) ${ALUVIA_API_KEY-unset} key:$(cat)\"; \
                      echo oops >&2; echo ready >&3; exec sleep 30";
        let mut spec = sh(&dir, script, Duration::from_secs(20));
        // The key reaches the child on its stdin only, never in its environment.
        spec.env.push((API_KEY_ENV.into(), "in-env".into()));
        spec.secret = Some("s3cret".into());
        let ready = spawn_daemon(spec).await.unwrap();
        assert_eq!(ready.lock, None, "a bare ready line");
        let pid = ready.pid;
        // Promptly: no polling interval in the way.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(is_process_alive(pid));
        // SAFETY: plain syscalls.
        assert_eq!(unsafe { libc::getsid(pid as i32) }, pid as i32, "its own session");
        // SAFETY: as above.
        assert_ne!(unsafe { libc::getsid(0) }, pid as i32);
        let log_text = log(&dir);
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        // A fresh log: nothing of an earlier session's.
        assert_eq!(log_text, format!("hi\nfrom-parent 3 {} unset key:s3cret\noops\n", cwd.display()));
        let mode = std::fs::metadata(dir.path().join("daemon.log")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing log is made 0600 too");
        assert_eq!(terminate(pid, None, Duration::from_secs(5)).await.unwrap(), Termination::Exited);
        wait_dead(pid).await;
    }

    #[tokio::test]
    async fn session_daemon_log_must_be_a_regular_file() {
        let dir = TempDir::new("daemon-log-fifo");
        let locks = dir.lock_dir();
        let log_path = dir.path().join("daemon.log");
        let path = std::ffi::CString::new(log_path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let claimed = |name: &str| {
            locks.claim(Some(name), LockData::default()).unwrap();
            let mut spec = sh(&dir, "echo ready >&3", Duration::from_secs(20));
            spec.claimed_lock = Some((locks.clone(), name.to_string()));
            spec
        };
        // A FIFO without a reader would block the open for good.
        assert_eq!(spawn_daemon(claimed("fifo")).await.unwrap_err(), LaunchError::LogNotRegular);
        assert!(locks.read("fifo").unwrap().is_none(), "the claim is given up");
        // With a reader the open succeeds, and the type is refused.
        let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&log_path).unwrap();
        assert_eq!(spawn_daemon(claimed("fifo")).await.unwrap_err(), LaunchError::LogNotRegular);
        drop(reader);
        std::fs::remove_file(&log_path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &log_path).unwrap();
        assert_eq!(spawn_daemon(claimed("link")).await.unwrap_err(), LaunchError::LogNotRegular);
        assert!(!dir.path().join("elsewhere").exists(), "nothing created through the link");
    }

    #[tokio::test]
    async fn session_daemon_new_log_is_0600() {
        let dir = TempDir::new("daemon-log");
        let pid = spawn_daemon(sh(&dir, "echo ready >&3", Duration::from_secs(20))).await.unwrap().pid;
        wait_dead(pid).await;
        let mode = std::fs::metadata(dir.path().join("daemon.log")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn session_daemon_died_while_starting() {
        let dir = TempDir::new("daemon-died");
        let started = Instant::now();
        let err = spawn_daemon(sh(&dir, "echo starting; echo not-ready >&3; exit 1", Duration::from_secs(20)))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::DiedWhileStarting { .. }), "{err:?}");
        assert_eq!(err.to_string(), "Browser process exited unexpectedly.");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(log(&dir), "starting\n");
    }

    #[tokio::test]
    async fn session_daemon_died_with_a_reason() {
        let dir = TempDir::new("daemon-reason");
        let script = "echo starting; printf 'failed  the API said no\\n  (401)\\n' >&3; exit 1";
        let err = spawn_daemon(sh(&dir, script, Duration::from_secs(20))).await.unwrap_err();
        let LaunchError::DiedWhileStarting { reason, .. } = &err else { panic!("{err:?}") };
        assert_eq!(reason.as_deref(), Some("the API said no"), "the first line's reason, trimmed");
        assert_eq!(err.to_string(), "Browser process exited unexpectedly.", "the documented message stays");
        // Without a failed line there is no reason.
        let err = spawn_daemon(sh(&dir, "exit 1", Duration::from_secs(20))).await.unwrap_err();
        assert!(matches!(err, LaunchError::DiedWhileStarting { reason: None, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn session_daemon_died_removes_its_claimed_lock() {
        let dir = TempDir::new("daemon-claim");
        let locks = dir.lock_dir();
        let name = locks.claim(Some("dying"), LockData::default()).unwrap();
        let mut spec = sh(&dir, "exit 3", Duration::from_secs(20));
        spec.claimed_lock = Some((locks.clone(), name));
        let err = spawn_daemon(spec).await.unwrap_err();
        let LaunchError::DiedWhileStarting { pid, reason: None } = err else { panic!("{err:?}") };
        assert_ne!(pid, std::process::id());
        assert_eq!(locks.read("dying").unwrap(), None);
    }

    #[tokio::test]
    async fn session_daemon_claimed_lock_gets_the_daemon_pid() {
        let dir = TempDir::new("daemon-pid");
        let locks = dir.lock_dir();
        let name = locks.claim(Some("mine"), LockData::default()).unwrap();
        let mut spec = sh(&dir, "echo ready >&3; exec sleep 30", Duration::from_secs(20));
        spec.claimed_lock = Some((locks.clone(), name));
        let pid = spawn_daemon(spec).await.unwrap().pid;
        let Some(LockRead::Valid(lock)) = locks.read("mine").unwrap() else { panic!() };
        assert_eq!(lock.pid, pid);
        assert!(lock.process_start.is_some(), "the daemon is recorded beyond its pid");
        assert_eq!(lock.process_start, crate::store::process_start(pid));
        assert_eq!(lock.session.as_deref(), Some("mine"));
        assert_eq!(terminate(pid, None, Duration::from_secs(5)).await.unwrap(), Termination::Exited);
    }

    fn claimed(dir: &TempDir, name: &str, spec: &mut DaemonSpawn) -> LockDir {
        let locks = dir.lock_dir();
        locks.claim(Some(name), LockData::default()).unwrap();
        spec.claimed_lock = Some((locks.clone(), name.to_string()));
        locks
    }

    #[tokio::test]
    async fn session_daemon_timeout_leaves_it_running_under_its_lock() {
        let dir = TempDir::new("daemon-timeout");
        let mut spec = sh(&dir, "exec sleep 30", Duration::from_millis(300));
        let locks = claimed(&dir, "slow", &mut spec);
        let started = Instant::now();
        let err = spawn_daemon(spec).await.unwrap_err();
        let elapsed = started.elapsed();
        let LaunchError::Timeout { pid } = err else { panic!("{err:?}") };
        assert_eq!(err.to_string(), "Browser is still initializing (timeout).");
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(is_process_alive(pid));
        // Findable: its lock names it, so `session list` and `session close` see it.
        let live = locks.live_sessions().unwrap().live;
        assert_eq!(live.iter().map(|l| (l.session.as_deref(), l.pid)).collect::<Vec<_>>(), [(Some("slow"), pid)]);
        assert_eq!(terminate(pid, None, Duration::from_secs(5)).await.unwrap(), Termination::Exited);
        wait_dead(pid).await;
    }

    #[tokio::test]
    async fn session_daemon_wait_failure_kills_its_group_and_releases_its_lock() {
        let dir = TempDir::new("daemon-garbled");
        let grandchild = dir.path().join("grandchild.pid");
        // A line longer than the parent takes, then the daemon lives on.
        let script =
            format!("sleep 30 & echo $! > '{}'; head -c 1100000 /dev/zero >&3; exec sleep 30", grandchild.display());
        let mut spec = sh(&dir, &script, Duration::from_secs(20));
        let locks = claimed(&dir, "garbled", &mut spec);
        let err = spawn_daemon(spec).await.unwrap_err();
        assert!(matches!(&err, LaunchError::Spawn(m) if m.contains("without a newline")), "{err:?}");
        let sleeper: u32 = std::fs::read_to_string(&grandchild).unwrap().trim().parse().unwrap();
        wait_dead(sleeper).await;
        let daemons: Vec<_> = locks.live_sessions().unwrap().live;
        assert!(daemons.is_empty(), "{daemons:?}");
        assert_eq!(locks.read("garbled").unwrap(), None, "the dead daemon's lock is removed");
    }

    #[tokio::test]
    async fn session_daemon_lock_taken_over_kills_it_and_keeps_the_lock() {
        let dir = TempDir::new("daemon-taken");
        // The script (and so the daemon's command line) names this test's directory.
        let token = dir.path().display().to_string();
        let mut spec = sh(&dir, &format!("cd '{token}'; sleep 30"), Duration::from_secs(20));
        let locks = claimed(&dir, "taken", &mut spec);
        // Someone else's (live) process holds the name by the time the daemon runs.
        let holder = LockData { pid: 1, session: Some("taken".into()), ..LockData::default() };
        locks.write("taken", &holder).unwrap();
        let err = spawn_daemon(spec).await.unwrap_err();
        assert!(matches!(&err, LaunchError::Spawn(m) if m.contains("removed or taken over")), "{err:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_mentioning(&token).is_empty() {
            assert!(Instant::now() < deadline, "the daemon outlived its failed start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(locks.read("taken").unwrap(), Some(LockRead::Valid(holder)), "not ours: left alone");
    }

    #[tokio::test]
    async fn session_daemon_spawn_failure() {
        let dir = TempDir::new("daemon-spawn");
        let mut spec = sh(&dir, "", Duration::from_secs(1));
        spec.program = dir.path().join("no-such-program");
        let locks = claimed(&dir, "never", &mut spec);
        let err = spawn_daemon(spec).await.unwrap_err();
        assert!(matches!(&err, LaunchError::Spawn(m) if m.contains("no-such-program")), "{err:?}");
        assert_eq!(locks.read("never").unwrap(), None, "the claim is released");
        let mut spec = sh(&dir, "", Duration::from_secs(1));
        spec.log_path = dir.path().join("missing-dir").join("x.log");
        let err = spawn_daemon(spec).await.unwrap_err();
        assert!(matches!(&err, LaunchError::Spawn(m) if m.contains("missing-dir")), "{err:?}");
    }

    #[tokio::test]
    async fn session_daemon_force_kill_takes_its_group() {
        let dir = TempDir::new("daemon-kill");
        let grandchild = dir.path().join("grandchild.pid");
        let script = format!("trap '' TERM; sleep 30 & echo $! > '{}'; echo ready >&3; wait", grandchild.display());
        let pid = spawn_daemon(sh(&dir, &script, Duration::from_secs(20))).await.unwrap().pid;
        let sleeper: u32 = std::fs::read_to_string(&grandchild).unwrap().trim().parse().unwrap();
        assert!(is_process_alive(sleeper));
        let started = Instant::now();
        assert_eq!(terminate(pid, None, Duration::from_millis(300)).await.unwrap(), Termination::ForceKilled);
        assert!(started.elapsed() >= Duration::from_millis(300));
        wait_dead(pid).await;
        wait_dead(sleeper).await;
    }

    const CHILD_ENV: &str = "ALUVIA_TEST_READY_CHILD";

    /// The daemon of `session_daemon_signal_ready_from_rust`.
    fn ready_in_child() {
        prepare_ready_fd().unwrap();
        // SAFETY: plain syscall.
        let flags = unsafe { libc::fcntl(READY_FD, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        println!("child up");
        let lock =
            LockData { pid: std::process::id(), cdp_url: Some("http://127.0.0.1:9".into()), ..LockData::default() };
        signal_ready(Some(&lock)).unwrap();
        signal_ready(None).unwrap();
        // SAFETY: plain syscall: the fd is closed now.
        assert_eq!(unsafe { libc::fcntl(READY_FD, libc::F_GETFD) }, -1);
        println!("child signalled");
        std::thread::sleep(Duration::from_secs(30));
    }

    #[tokio::test]
    async fn session_daemon_signal_ready_from_rust() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return ready_in_child();
        }
        let dir = TempDir::new("daemon-rust");
        let spec = DaemonSpawn {
            program: std::env::current_exe().unwrap(),
            args: [
                "--exact",
                "daemon::launcher::tests::session_daemon_signal_ready_from_rust",
                "--nocapture",
                "--test-threads=1",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![(CHILD_ENV.into(), "1".into())],
            cwd: dir.path().to_path_buf(),
            log_path: dir.path().join("daemon.log"),
            ready_timeout: Duration::from_secs(20),
            secret: None,
            claimed_lock: None,
        };
        let ready = spawn_daemon(spec).await.unwrap();
        let pid = ready.pid;
        let sent = LockData { pid, cdp_url: Some("http://127.0.0.1:9".into()), ..LockData::default() };
        assert_eq!(ready.lock, Some(sent), "the lock it sent along");
        assert!(log(&dir).contains("child up"), "{}", log(&dir));
        // The child's own checks after signalling.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log(&dir).contains("child signalled") && !log(&dir).contains("panicked") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(log(&dir).contains("child signalled"), "{}", log(&dir));
        assert_eq!(terminate(pid, None, Duration::from_secs(5)).await.unwrap(), Termination::Exited);
    }
}
