//! A tiny leveled logger writing to stderr. Messages never carry secrets: call
//! sites pass only hostnames, statuses and reasons.
//!
//! Every line goes out through [`write_line`]: the logger's, a session
//! daemon's own and its JavaScript side's (`sessionDaemonLog`), each as one
//! write, so that lines from several threads never interleave in a daemon's
//! log, and all of them stamped alike once the daemon calls [`stamp_lines`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static STAMPED: AtomicBool = AtomicBool::new(false);

/// From now on every line carries the time (a session daemon's log).
pub fn stamp_lines() {
    STAMPED.store(true, Ordering::Relaxed);
}

/// Writes `[aluvia] <msg>` (with the time after the tag once [`stamp_lines`]
/// was called) as one line in one write.
pub fn write_line(msg: &str) {
    let line = if STAMPED.load(Ordering::Relaxed) {
        format!("[aluvia] {} {msg}\n", iso_now())
    } else {
        format!("[aluvia] {msg}\n")
    };
    write_raw(&line);
}

fn write_raw(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as JavaScript's `toISOString()`.
pub fn iso_now() -> String {
    iso_time(SystemTime::now())
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso_time(at: SystemTime) -> String {
    let now = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(0);
    // SAFETY: an all-zero `tm` is a valid value; gmtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::gmtime_r(&secs, &mut tm) }.is_null() {
        return format!("{}ms", now.as_millis());
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_millis()
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Silent = 0,
    Info = 1,
    Debug = 2,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "silent" => Some(Level::Silent),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

/// A per-client log level, shared by everything a client starts.
#[derive(Debug)]
pub struct Logger {
    level: AtomicU8,
}

impl Default for Logger {
    fn default() -> Self {
        Logger::new(Level::Info)
    }
}

impl Logger {
    pub fn new(level: Level) -> Self {
        Logger { level: AtomicU8::new(level as u8) }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level != Level::Silent && self.level.load(Ordering::Relaxed) >= level as u8
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Info) {
            write_line(&format!("warn: {}", msg.as_ref()));
        }
    }

    pub fn info(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Info) {
            write_line(msg.as_ref());
        }
    }

    pub fn debug(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Debug) {
            write_line(&format!("debug: {}", msg.as_ref()));
        }
    }

    /// A raw line at debug level (for machine-readable JSON lines).
    pub fn debug_line(&self, line: impl AsRef<str>) {
        if self.enabled(Level::Debug) {
            write_raw(&format!("{}\n", line.as_ref()));
        }
    }
}

/// Keeps a failure that repeats (a poll against an API that is down) from
/// filling a log: the first failure is reported, then at most one "still
/// failing" line per `interval`, and one line when it works again. Callers
/// log the lines it returns.
#[derive(Debug, Clone)]
pub struct RepeatedFailure {
    what: &'static str,
    /// `None`: no reminders, only the first failure and the recovery.
    interval: Option<Duration>,
    failing: Option<Failing>,
}

#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Instant,
    last_reported: Instant,
    count: u64,
}

impl RepeatedFailure {
    /// Reports the first failure of `what`, then once per `interval` while it goes on.
    pub fn new(what: &'static str, interval: Duration) -> Self {
        RepeatedFailure { what, interval: Some(interval), failing: None }
    }

    /// Reports the first failure of `what` only, until it succeeds again.
    pub fn once(what: &'static str) -> Self {
        RepeatedFailure { what, interval: None, failing: None }
    }

    /// A failure at `now`: the line to log, if one is due.
    pub fn failed_at(&mut self, now: Instant, error: &dyn std::fmt::Display) -> Option<String> {
        let Some(failing) = self.failing.as_mut() else {
            self.failing = Some(Failing { since: now, last_reported: now, count: 1 });
            return Some(format!("{} failed: {error}", self.what));
        };
        failing.count += 1;
        let due = self.interval.is_some_and(|every| now.saturating_duration_since(failing.last_reported) >= every);
        if !due {
            return None;
        }
        failing.last_reported = now;
        Some(format!(
            "{} still failing ({} failures in {} s): {error}",
            self.what,
            failing.count,
            now.saturating_duration_since(failing.since).as_secs()
        ))
    }

    /// A success at `now`: the recovery line after failures, else nothing.
    pub fn succeeded_at(&mut self, now: Instant) -> Option<String> {
        let failing = self.failing.take()?;
        Some(format!(
            "{} works again after {} failures in {} s",
            self.what,
            failing.count,
            now.saturating_duration_since(failing.since).as_secs()
        ))
    }

    pub fn failed(&mut self, error: &dyn std::fmt::Display) -> Option<String> {
        self.failed_at(Instant::now(), error)
    }

    pub fn succeeded(&mut self) -> Option<String> {
        self.succeeded_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_daemon_log_timestamps_are_iso() {
        let ts = iso_now();
        let bytes = ts.as_bytes();
        assert_eq!(bytes.len(), 24, "{ts}");
        for (i, b) in bytes.iter().enumerate() {
            match i {
                4 | 7 => assert_eq!(*b, b'-', "{ts}"),
                10 => assert_eq!(*b, b'T', "{ts}"),
                13 | 16 => assert_eq!(*b, b':', "{ts}"),
                19 => assert_eq!(*b, b'.', "{ts}"),
                23 => assert_eq!(*b, b'Z', "{ts}"),
                _ => assert!(b.is_ascii_digit(), "{ts}"),
            }
        }
        assert!(ts.as_str() > "2024-01-01T00:00:00.000Z", "{ts}");
    }

    use super::*;

    #[test]
    fn repeated_failure_reports_first_then_at_most_once_per_interval_then_recovery() {
        let every = Duration::from_millis(100);
        let mut f = RepeatedFailure::new("config poll", every);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(f.succeeded_at(at(0)), None, "nothing to recover from");
        assert_eq!(f.failed_at(at(0), &"503").as_deref(), Some("config poll failed: 503"));
        // One failure every 10 ms: silent until the interval has passed.
        let lines: Vec<String> = (1..=25).filter_map(|i| f.failed_at(at(i * 10), &"503")).collect();
        assert_eq!(
            lines,
            [
                "config poll still failing (11 failures in 0 s): 503",
                "config poll still failing (21 failures in 0 s): 503"
            ]
        );
        assert_eq!(f.succeeded_at(at(1250)).as_deref(), Some("config poll works again after 26 failures in 1 s"));
        assert_eq!(f.succeeded_at(at(1260)), None);
        // A new outage is reported afresh.
        assert_eq!(f.failed_at(at(1300), &"timeout").as_deref(), Some("config poll failed: timeout"));
    }

    #[test]
    fn repeated_failure_once_stays_quiet_until_it_works_again() {
        let mut f = RepeatedFailure::once("lock file update");
        let t0 = Instant::now();
        assert_eq!(
            f.failed_at(t0, &"No space left on device").as_deref(),
            Some("lock file update failed: No space left on device")
        );
        for i in 1..100 {
            assert_eq!(f.failed_at(t0 + Duration::from_secs(i * 3600), &"No space left on device"), None);
        }
        assert!(f.succeeded_at(t0 + Duration::from_secs(400_000)).is_some());
        assert!(f.failed_at(t0 + Duration::from_secs(400_001), &"again").is_some());
    }
}
