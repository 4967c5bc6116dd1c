//! The pipes between the launcher (in the CLI process) and the daemon it
//! starts, both sides: the API key on the daemon's stdin, and the ready pipe
//! on its fd 3, on which the daemon says `ready` (optionally followed by its
//! lock file's JSON) once its first navigation is done, or `failed <reason>`
//! when it cannot start.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::store::LockData;

/// The environment variable naming the child's end of the ready pipe.
pub const READY_FD_ENV: &str = "ALUVIA_READY_FD";

/// The fd number the child finds the ready pipe on.
pub(super) const READY_FD: RawFd = 3;

/// What the child writes, followed by a newline.
const READY_LINE: &[u8] = b"ready";

/// What a child that cannot start writes, followed by a space, its reason and a newline.
const FAILED_LINE: &[u8] = b"failed";

/// The longest reason the child sends (longer ones are cut, on a char boundary).
const MAX_REASON: usize = 2000;

/// The longest line the parent takes from the ready pipe: the ready line
/// carries the lock, whose start URL can be as long as an argument can
/// (128 KiB on Linux).
const MAX_READY_LINE: usize = 1024 * 1024;

/// How the wait for the ready line ended.
pub(super) enum Outcome {
    Ready(Option<Box<LockData>>),
    /// With the reason of a `failed` line, if one came.
    Closed(Option<String>),
    TimedOut,
}

pub(super) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// A pipe whose two ends are close-on-exec and not among fds 0-2.
pub(super) fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        // SAFETY: fds has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
            return Err(last_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        // SAFETY: fds has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } == -1 {
            return Err(last_error());
        }
        for fd in fds {
            // SAFETY: fd was just returned by pipe.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// A process started with a closed stdin/out/err could get a pipe end on fd
/// 0-2, which the child's stdio setup would then overwrite: move it up.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fd is valid; the duplicate is a fresh descriptor.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, READY_FD + 1) };
    if dup == -1 {
        return Err(last_error());
    }
    // SAFETY: dup is fresh and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// The launcher's side: reads the ready pipe until a `ready` line, its
/// closing (with the reason of a `failed` line, if one came) or `timeout`.
pub(super) async fn wait_ready(read_end: OwnedFd, timeout: Duration) -> io::Result<Outcome> {
    let mut pipe = pipe::Receiver::from_owned_fd(read_end)?;
    let read_lines = async {
        let mut pending = Vec::new();
        let mut failed = None;
        let mut chunk = [0u8; 512];
        loop {
            let n = pipe.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Outcome::Closed(failed));
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(lock) = ready_line(&line[..end]) {
                    return Ok(Outcome::Ready(lock.map(Box::new)));
                }
                if let Some(reason) = failed_line(&line[..end]) {
                    failed = Some(reason);
                }
            }
            if pending.len() > MAX_READY_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the daemon wrote more than {MAX_READY_LINE} bytes without a newline"),
                ));
            }
        }
    };
    match tokio::time::timeout(timeout, read_lines).await {
        Ok(outcome) => outcome,
        Err(_) => Ok(Outcome::TimedOut),
    }
}

/// `ready` → `Some(None)`; `ready {lock json}` → `Some(Some(lock))` (a payload
/// that does not parse is ignored); anything else → `None`.
fn ready_line(line: &[u8]) -> Option<Option<LockData>> {
    let rest = line.trim_ascii().strip_prefix(READY_LINE)?;
    if rest.is_empty() {
        return Some(None);
    }
    if !rest[0].is_ascii_whitespace() {
        return None;
    }
    Some(serde_json::from_slice(rest).ok())
}

/// `failed <reason>` → the reason (one line, at most [`MAX_REASON`] bytes);
/// anything else → `None`.
fn failed_line(line: &[u8]) -> Option<String> {
    let rest = line.trim_ascii().strip_prefix(FAILED_LINE)?;
    if rest.first().is_some_and(|b| !b.is_ascii_whitespace()) {
        return None;
    }
    let reason = String::from_utf8_lossy(rest);
    let reason = reason.trim();
    (!reason.is_empty()).then(|| one_line(reason))
}

/// `text` on one line (whitespace runs become one space), cut to [`MAX_REASON`] bytes.
fn one_line(text: &str) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// Whether this process has already used (or given up) its ready fd.
static READY_FD_DONE: Mutex<bool> = Mutex::new(false);

/// The ready fd named by `ALUVIA_READY_FD`, if it is set and names a pipe
/// (an inherited variable naming some other fd is ignored).
fn ready_fd_from_env() -> io::Result<Option<RawFd>> {
    let Some(value) = std::env::var_os(READY_FD_ENV) else { return Ok(None) };
    let fd: RawFd = value.to_str().and_then(|v| v.trim().parse().ok()).filter(|fd| *fd >= 0).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{READY_FD_ENV} is not a file descriptor: {value:?}"))
    })?;
    // SAFETY: fstat only writes into the zeroed struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat is a valid, writable struct; a bad fd only makes fstat fail.
    if unsafe { libc::fstat(fd, &mut stat) } == -1 || stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Ok(None);
    }
    Ok(Some(fd))
}

/// For the daemon, early: marks the ready fd close-on-exec so that the
/// processes it starts (Chromium) do not inherit it and keep the pipe open
/// after the daemon dies. A no-op without `ALUVIA_READY_FD`.
pub fn prepare_ready_fd() -> io::Result<()> {
    let done = READY_FD_DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *done {
        return Ok(());
    }
    if let Some(fd) = ready_fd_from_env()? {
        // SAFETY: fd is an open pipe.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(last_error());
        }
    }
    Ok(())
}

/// The longest secret [`take_secret`] reads (the CLI sends the session's
/// spec along, whose start URL can be as long as an argument can).
const MAX_SECRET: u64 = 1024 * 1024;

/// For the daemon, first thing: makes this process non-dumpable on Linux (no
/// core dumps; `/proc/<pid>/environ`, `mem` and ptrace closed to other
/// processes of the user, since it holds the API key), then reads the secret
/// [`spawn_daemon`](super::spawn_daemon) writes to its stdin, up to end of file. Empty when stdin
/// holds nothing (/dev/null).
pub fn take_secret() -> io::Result<String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain prctl call with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == -1 {
            return Err(last_error());
        }
    }
    let mut secret = String::new();
    io::Read::read_to_string(&mut io::Read::take(io::stdin().lock(), MAX_SECRET), &mut secret)?;
    Ok(secret)
}

/// For the daemon, once it is ready (after its final lock write): writes
/// `ready\n`, or `ready {lock json}\n` with `lock`, to the fd named by
/// `ALUVIA_READY_FD`, then closes it. Idempotent; a no-op without the
/// variable. A parent that stopped waiting (closed pipe) is not an error.
pub fn signal_ready(lock: Option<&LockData>) -> io::Result<()> {
    let mut line = READY_LINE.to_vec();
    if let Some(lock) = lock {
        line.push(b' ');
        line.extend(serde_json::to_vec(lock).map_err(io::Error::other)?);
    }
    send_final_line(line)
}

/// For the daemon, when it cannot start: writes `failed <reason>\n` (the
/// reason on one line) to the fd named by `ALUVIA_READY_FD`, then closes it,
/// so that `session start` can say why. The caller keeps secrets out of
/// `reason`. Idempotent with [`signal_ready`] (only the first is sent); a
/// no-op without the variable.
pub fn signal_failed(reason: &str) -> io::Result<()> {
    let mut line = FAILED_LINE.to_vec();
    line.push(b' ');
    line.extend(one_line(reason).as_bytes());
    send_final_line(line)
}

/// Writes `line` and a newline to the ready fd and closes it; once only.
fn send_final_line(mut line: Vec<u8>) -> io::Result<()> {
    let mut done = READY_FD_DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *done {
        return Ok(());
    }
    let Some(fd) = ready_fd_from_env()? else {
        return Ok(());
    };
    line.push(b'\n');
    let mut written = 0;
    let result = loop {
        if written == line.len() {
            break Ok(());
        }
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::write(fd, line[written..].as_ptr().cast(), line.len() - written) };
        if n >= 0 {
            written += n as usize;
            continue;
        }
        let e = last_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EPIPE) => break Ok(()),
            _ => break Err(e),
        }
    };
    // SAFETY: fd is ours to close; it is not used again (done is set).
    unsafe { libc::close(fd) };
    *done = true;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ready_lines() {
        assert_eq!(ready_line(b"ready"), Some(None));
        assert_eq!(ready_line(b" ready \r"), Some(None));
        let lock = ready_line(br#"ready {"pid":7,"cdpUrl":"http://127.0.0.1:1"}"#).unwrap().unwrap();
        assert_eq!((lock.pid, lock.cdp_url.as_deref()), (7, Some("http://127.0.0.1:1")));
        assert_eq!(ready_line(b"ready {not json"), Some(None), "a bad payload is ignored");
        assert_eq!(ready_line(b"readying"), None);
        assert_eq!(ready_line(b"not-ready"), None);
        assert_eq!(ready_line(b""), None);
    }

    #[test]
    fn session_failed_lines() {
        assert_eq!(failed_line(b"failed boom"), Some("boom".into()));
        assert_eq!(failed_line(b" failed  a\tb   c \r"), Some("a b c".into()));
        assert_eq!(failed_line(b"failed"), None, "no reason");
        assert_eq!(failed_line(b"failedx y"), None);
        assert_eq!(failed_line(b"ready"), None);
        let long = failed_line(format!("failed {}", "é".repeat(MAX_REASON)).as_bytes()).unwrap();
        assert!(long.len() <= MAX_REASON + '…'.len_utf8() && long.ends_with('…'), "{}", long.len());
        assert_eq!(one_line("a\nb\r\nc"), "a b c");
    }

    #[test]
    fn session_signal_ready_without_env_is_a_noop() {
        if std::env::var_os(READY_FD_ENV).is_none() {
            signal_ready(None).unwrap();
            prepare_ready_fd().unwrap();
        }
    }
}
