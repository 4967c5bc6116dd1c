//! Reading and writing lock files: `cli-{name}.lock` JSON in the lock
//! directory, written with temp file + fsync + rename, and mutated under an
//! exclusive `fs2` lock on the directory's `.dir.lock` so that
//! read-modify-write, stale cleanup and name claims never interleave (between
//! threads or processes).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::dir::LockDir;
use super::naming::{validate_session_name, INVALID_NAME_MESSAGE};
use super::record::{parse_lock, LockData, LockRead};
use crate::error::{AluviaError, Result};

pub(super) const DIR_LOCK_FILE: &str = ".dir.lock";
pub(super) const LOCK_PREFIX: &str = "cli-";
pub(super) const LOCK_SUFFIX: &str = ".lock";
pub(super) const TMP_PREFIX: &str = ".cli-";
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// Held while the directory's exclusive lock is taken; released on drop.
pub(super) struct DirGuard(File);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = fs2::FileExt::unlock(&self.0);
    }
}

pub(super) fn internal(what: &str, path: &Path, e: impl std::fmt::Display) -> AluviaError {
    AluviaError::Internal(format!("Could not {what} {}: {e}", path.display()))
}

/// Opens (creating it 0600 when missing, never through a symlink) a file to
/// take an advisory lock on: a file description of its own each time, so
/// that threads of one process contend like processes do.
pub(super) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| internal("open", path, e))
}

pub(super) fn check_name(name: &str) -> Result<()> {
    if validate_session_name(name) {
        Ok(())
    } else {
        Err(AluviaError::Invalid(INVALID_NAME_MESSAGE.into()))
    }
}

impl LockDir {
    /// Takes the directory's exclusive lock.
    pub(super) fn lock_exclusive(&self) -> Result<DirGuard> {
        let path = self.path().join(DIR_LOCK_FILE);
        let file = open_lock_file(&path)?;
        loop {
            match fs2::FileExt::lock_exclusive(&file) {
                Ok(()) => return Ok(DirGuard(file)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(internal("lock", &path, e)),
            }
        }
    }

    pub(super) fn read_unlocked(&self, name: &str) -> Result<Option<LockRead>> {
        let path = self.lock_path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(parse_lock(name, &bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal("read lock file", &path, e)),
        }
    }

    pub(super) fn write_unlocked(&self, name: &str, data: &LockData) -> Result<()> {
        let path = self.lock_path(name);
        let json = serde_json::to_vec(data).map_err(|e| internal("serialize lock file", &path, e))?;
        let tmp = self.path().join(format!(
            "{TMP_PREFIX}{name}{LOCK_SUFFIX}.{}.{:016x}{TMP_SUFFIX}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            // Exactly 0600 whatever the umask.
            file.set_permissions(Permissions::from_mode(0o600))?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            internal("write lock file", &path, e)
        })
    }

    pub(super) fn remove_unlocked(&self, name: &str) -> Result<()> {
        let path = self.lock_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(internal("remove lock file", &path, e)),
        }
    }

    /// Writes `cli-{name}.lock` atomically (a unique 0600 temp file in the same
    /// directory, fsync, rename). The final file is 0600.
    pub fn write(&self, name: &str, data: &LockData) -> Result<()> {
        check_name(name)?;
        let _guard = self.lock_exclusive()?;
        self.write_unlocked(name, data)
    }

    /// Read-modify-write under the directory lock: `f` edits the lock and
    /// says whether to write it. The lock as written, or `None` when nothing
    /// was written: the lock file is missing or corrupt (`f` not called), or
    /// `f` declined.
    pub fn update<F: FnOnce(&mut LockData) -> bool>(&self, name: &str, f: F) -> Result<Option<LockData>> {
        check_name(name)?;
        let _guard = self.lock_exclusive()?;
        let Some(LockRead::Valid(mut data)) = self.read_unlocked(name)? else { return Ok(None) };
        if !f(&mut data) {
            return Ok(None);
        }
        self.write_unlocked(name, &data)?;
        Ok(Some(data))
    }

    /// [`LockDir::update`] on behalf of the lock's owner: `f` runs (and the
    /// lock is written) only when the lock names `pid`.
    pub fn update_owned<F: FnOnce(&mut LockData)>(&self, name: &str, pid: u32, f: F) -> Result<Option<LockData>> {
        self.update(name, |lock| {
            if lock.pid != pid {
                return false;
            }
            f(lock);
            true
        })
    }

    /// `None` when there is no lock file by that name.
    pub fn read(&self, name: &str) -> Result<Option<LockRead>> {
        check_name(name)?;
        self.read_unlocked(name)
    }

    /// Removes the lock file (never the log); a missing file is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let _guard = self.lock_exclusive()?;
        self.remove_unlocked(name)
    }

    /// Every `cli-{name}.lock` (with a valid name), sorted by name. A file that
    /// cannot be read or parsed is listed as [`LockRead::Corrupt`].
    pub fn list(&self) -> Result<Vec<(String, LockRead)>> {
        let entries = fs::read_dir(self.path()).map_err(|e| internal("list lock directory", self.path(), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| internal("list lock directory", self.path(), e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(LOCK_PREFIX))
                .and_then(|f| f.strip_suffix(LOCK_SUFFIX))
                .filter(|n| validate_session_name(n))
            else {
                continue;
            };
            match self.read_unlocked(name) {
                Ok(Some(read)) => out.push((name.to_string(), read)),
                Ok(None) => {} // removed since the directory was read
                Err(e) => {
                    out.push((name.to_string(), LockRead::Corrupt { name: name.to_string(), reason: e.to_string() }))
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
