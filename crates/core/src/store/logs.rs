//! Session logs (`cli-{name}.log`) outlive their sessions; a session start
//! prunes those of sessions that no longer run: only the newest
//! [`KEEP_LOGS`] stay, and none older than [`MAX_LOG_AGE`].

use std::fs;
use std::time::{Duration, SystemTime};

use super::dir::LockDir;
use super::naming::validate_session_name;
use super::record::LockRead;
use crate::error::Result;

/// How many logs of ended sessions are kept.
pub const KEEP_LOGS: usize = 20;

/// Logs of ended sessions older than this are removed.
pub const MAX_LOG_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl LockDir {
    /// Removes the logs of sessions that are not running (no lock, or a lock
    /// whose process is gone) beyond the newest `keep`, and those last written
    /// more than `max_age` ago. Logs of running sessions (and anything that is
    /// not a regular file) are left alone. The names whose logs went, sorted.
    pub fn prune_logs(&self, keep: usize, max_age: Duration) -> Result<Vec<String>> {
        let _guard = self.lock_exclusive()?;
        let Ok(entries) = fs::read_dir(self.path()) else { return Ok(Vec::new()) };
        let now = SystemTime::now();
        let mut ended = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix("cli-"))
                .and_then(|f| f.strip_suffix(".log"))
                .filter(|n| validate_session_name(n))
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.file_type().is_file() {
                continue;
            }
            let running = match self.read_unlocked(name) {
                Ok(Some(LockRead::Valid(lock))) => lock.is_live(),
                Ok(None) => false,
                // A lock that cannot be judged: its log stays.
                Ok(Some(LockRead::Corrupt { .. })) | Err(_) => true,
            };
            if !running {
                ended.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name.to_string()));
            }
        }
        // Newest first.
        ended.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for (i, (modified, name)) in ended.into_iter().enumerate() {
            let too_old = now.duration_since(modified).is_ok_and(|age| age > max_age);
            if (i >= keep || too_old) && fs::remove_file(self.log_path(&name)).is_ok() {
                removed.push(name);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{dead_pid, TempDir};
    use crate::store::LockData;
    use std::fs::FileTimes;

    fn log_aged(dir: &LockDir, name: &str, age: Duration) {
        let path = dir.log_path(name);
        fs::write(&path, name).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_times(FileTimes::new().set_modified(SystemTime::now() - age)).unwrap();
    }

    #[test]
    fn session_logs_of_ended_sessions_are_pruned() {
        let tmp = TempDir::new("logs-prune");
        let dir = tmp.lock_dir();
        let minute = Duration::from_secs(60);
        // Ended sessions, `old-0` the newest.
        for i in 0..5u32 {
            log_aged(&dir, &format!("old-{i}"), minute * (i + 1));
        }
        log_aged(&dir, "ancient", MAX_LOG_AGE + minute);
        // A running session's log, older than every other: kept.
        dir.write(
            "running",
            &LockData {
                process_start: crate::store::process_start(std::process::id()),
                pid: std::process::id(),
                ..LockData::default()
            },
        )
        .unwrap();
        log_aged(&dir, "running", MAX_LOG_AGE * 2);
        // A session whose process is gone counts as ended.
        dir.write("dead", &LockData { pid: dead_pid(), ..LockData::default() }).unwrap();
        log_aged(&dir, "dead", minute * 10);
        // Not a session log.
        fs::write(dir.path().join("other.log"), b"x").unwrap();

        let removed = dir.prune_logs(3, MAX_LOG_AGE).unwrap();
        assert_eq!(removed, ["ancient", "dead", "old-3", "old-4"]);
        for kept in ["old-0", "old-1", "old-2", "running"] {
            assert!(dir.log_path(kept).exists(), "{kept}");
        }
        assert!(dir.path().join("other.log").exists());
        assert_eq!(dir.prune_logs(3, MAX_LOG_AGE).unwrap(), Vec::<String>::new());
    }
}
