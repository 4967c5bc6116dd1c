//! `rules-{connectionId}.lock`: an exclusive `fs2` lock per connection in the
//! lock directory, held around a read-modify-write of that connection's rules
//! so that the CLI and every session daemon sharing the directory take turns.
//!
//! Waiting never blocks a tokio worker: the lock is tried without blocking and
//! retried after a short sleep (opening the file, checking it and removing it
//! are quick local file calls made in place). The holder removes the file
//! before it lets go, so nothing is left behind; a waiter that then wins the
//! lock on the removed file notices (the path no longer names its file) and
//! starts over.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dir::LockDir;
use super::io::{internal, open_lock_file};
use crate::error::{AluviaError, Result};

const FIRST_RETRY: Duration = Duration::from_millis(2);
const MAX_RETRY: Duration = Duration::from_millis(50);

/// Held while a connection's rules are edited; released (and its file
/// removed) on drop.
#[derive(Debug)]
pub struct RulesLock {
    file: File,
    path: PathBuf,
}

impl Drop for RulesLock {
    fn drop(&mut self) {
        // Remove first, then unlock: whoever gets the lock next on this file
        // sees that it is gone and retries on a new one.
        let _ = fs::remove_file(&self.path);
        let _ = fs2::FileExt::unlock(&self.file);
    }
}

/// A connection id as a file-name part: letters, digits, `-` and `_` as they
/// are, anything else as `.xx` hex bytes (so no id can leave the directory).
fn file_key(connection_id: &str) -> String {
    let mut out = String::new();
    for b in connection_id.trim().bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!(".{b:02x}"));
        }
    }
    out
}

impl LockDir {
    /// `rules-{connectionId}.lock`.
    pub fn rules_lock_path(&self, connection_id: &str) -> PathBuf {
        self.path().join(format!("rules-{}.lock", file_key(connection_id)))
    }

    /// Takes the exclusive lock on the rules of `connection_id`, waiting at
    /// most `wait` for another holder (thread or process) to let go.
    pub async fn lock_rules(&self, connection_id: &str, wait: Duration) -> Result<RulesLock> {
        let path = self.rules_lock_path(connection_id);
        let deadline = Instant::now() + wait;
        let mut delay = FIRST_RETRY;
        let mut file = open_lock_file(&path)?;
        loop {
            match fs2::FileExt::try_lock_exclusive(&file) {
                Ok(()) if names(&path, &file) => return Ok(RulesLock { file, path }),
                // Removed by the previous holder after we opened it: start over.
                Ok(()) => file = open_lock_file(&path)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                    if Instant::now() >= deadline {
                        return Err(AluviaError::Internal(format!(
                            "Timed out after {} ms waiting for {}: another process is editing the rules of connection {}",
                            wait.as_millis(),
                            path.display(),
                            connection_id.trim()
                        )));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                }
                Err(e) => return Err(internal("lock", &path, e)),
            }
        }
    }
}

/// True when `path` still names the file `file` has open.
fn names(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(on_disk), Ok(open)) => on_disk.dev() == open.dev() && on_disk.ino() == open.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::TempDir;

    #[test]
    fn rules_lock_file_names() {
        let tmp = TempDir::new("rules-names");
        let dir = tmp.lock_dir();
        assert_eq!(dir.rules_lock_path("3449"), dir.path().join("rules-3449.lock"));
        assert_eq!(dir.rules_lock_path(" a_B-1 "), dir.path().join("rules-a_B-1.lock"));
        assert_eq!(dir.rules_lock_path("../x"), dir.path().join("rules-.2e.2e.2fx.lock"));
    }

    #[tokio::test]
    async fn rules_lock_is_exclusive_and_leaves_nothing() {
        let tmp = TempDir::new("rules-lock");
        let dir = tmp.lock_dir();
        let held = dir.lock_rules("7", Duration::from_secs(5)).await.unwrap();
        let path = dir.rules_lock_path("7");
        assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o777, 0o600);

        // A second taker times out while the first holds it; another id is free.
        let err = dir.lock_rules("7", Duration::from_millis(100)).await.unwrap_err();
        assert!(err.to_string().contains("another process is editing the rules of connection 7"), "{err}");
        drop(dir.lock_rules("8", Duration::from_millis(100)).await.unwrap());

        // A waiter gets it once the holder lets go, on a fresh file.
        let waiter = {
            let dir = dir.clone();
            tokio::spawn(async move { dir.lock_rules("7", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        drop(held);
        let second = waiter.await.unwrap().unwrap();
        assert!(names(&path, &second.file));
        drop(second);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
