//! Persistent Chromium profiles (ours): `~/.aluvia/profiles/<name>/`, the
//! user-data-dir of every browser started with that profile, kept after it
//! closes (cookies, local storage, logins), used by one browser at a time.
//!
//! The folders are opened as `~/.aluvia` is ([`crate::auth`]): no link is
//! followed, each must be a directory of the user's that group and others
//! cannot write, and what is created is 0700. A profile is held through an
//! exclusive `flock` on its [`LOCK_FILE`], which names the holder; the
//! browser inherits that descriptor, so a profile stays held until its
//! Chromium is gone too, even when the process that started it was killed.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::auth::{check, open_at, open_dir, open_or_create_dir, unsafe_path, DIR_MODE};
use crate::error::AluviaError;
use crate::store::{validate_session_name, SessionError};

/// The file in a profile whose lock holds it, and which names the holder.
pub const LOCK_FILE: &str = ".aluvia-profile.lock";

/// How long taking a profile waits out another process's look at it
/// (`profile list` takes a shared lock for a moment).
const TAKE_WAIT: Duration = Duration::from_secs(1);

type Result<T> = std::result::Result<T, SessionError>;

/// `{home}/.aluvia/profiles`.
pub fn profiles_dir(home: &Path) -> PathBuf {
    home.join(".aluvia").join("profiles")
}

/// Who holds a profile, as its lock file says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// The CLI session, or `None` for a program's own client.
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub pid: u32,
}

impl Holder {
    /// What `profile list` shows in `inUseBy`.
    pub fn label(&self) -> String {
        self.session.clone().unwrap_or_else(|| format!("pid {}", self.pid))
    }

    fn in_use(self, profile: &str) -> SessionError {
        let profile = profile.to_string();
        match self.session {
            Some(browser_session) => SessionError::ProfileInUse { browser_session, profile },
            None => SessionError::ProfileHeld { profile, pid: self.pid },
        }
    }
}

/// One profile, as `profile list` shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileInfo {
    pub name: String,
    pub size_bytes: u64,
    /// When a browser last took it (ISO time), else when it was made.
    pub last_used: String,
    /// The session (or `pid N`) that holds it, or `None`.
    pub in_use_by: Option<String>,
}

/// A profile taken by this process: its folder and the held lock. Dropping
/// it lets the profile go (unless a browser that inherited the lock lives on).
#[derive(Debug)]
pub struct ProfileLock {
    name: String,
    path: PathBuf,
    lock: File,
}

impl ProfileLock {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile's folder, Chromium's user-data-dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock's descriptor, for a child to inherit (it is close-on-exec).
    pub fn lock_fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }
}

/// The invalid-name error unless `name` follows the session names' rules.
pub fn validate_name(name: &str) -> Result<()> {
    if validate_session_name(name) {
        Ok(())
    } else {
        Err(SessionError::ProfileInvalidName {})
    }
}

fn c_name(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| SessionError::ProfileInvalidName {})
}

fn io_error(path: &Path, what: &str, e: io::Error) -> SessionError {
    SessionError::Other(AluviaError::Invalid(format!("Cannot {what} {}: {e}", path.display())))
}

/// `name` in the open folder `parent` as a folder: opened without following
/// a link (created 0700 when `create` and missing; `None` when missing and
/// not `create`), and checked.
fn open_sub(parent: &File, name: &str, path: &Path, create: bool) -> Result<Option<File>> {
    let c = c_name(name)?;
    if create {
        // SAFETY: `parent` is an open descriptor and `c` NUL-terminated, both alive for the call.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), DIR_MODE as libc::mode_t) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_error(path, "create", e));
            }
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let dir = match open_at(parent, &c, flags, 0) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return Err(unsafe_path(path, "it is a symlink or not a directory.").into());
        }
        Err(e) => return Err(io_error(path, "open", e)),
    };
    let meta = dir.metadata().map_err(|e| io_error(path, "inspect", e))?;
    check(path, &meta, true)?;
    Ok(Some(dir))
}

/// `~/.aluvia/profiles`, opened and checked (created when `create`).
fn open_profiles(home: &Path, create: bool) -> Result<Option<File>> {
    let aluvia = home.join(".aluvia");
    let cannot = |e: io::Error| AluviaError::Invalid(format!("Cannot create {}: {e}", aluvia.display()));
    let parent = if create { Some(open_or_create_dir(&aluvia, cannot)?) } else { open_dir(&aluvia)? };
    match parent {
        Some(parent) => open_sub(&parent, "profiles", &profiles_dir(home), create),
        None => Ok(None),
    }
}

/// The profile's lock file, opened without following a link (created 0600
/// when `create`).
fn open_lock(profile: &File, path: &Path, create: bool) -> Result<Option<File>> {
    let c = c_name(LOCK_FILE)?;
    let mut flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    if create {
        flags |= libc::O_CREAT;
    }
    let lock_path = path.join(LOCK_FILE);
    match open_at(profile, &c, flags, 0o600) {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| io_error(&lock_path, "inspect", e))?;
            check(&lock_path, &meta, false)?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(unsafe_path(&lock_path, "it is a symlink.").into()),
        Err(e) => Err(io_error(&lock_path, "open", e)),
    }
}

fn read_holder(lock: &mut File) -> Holder {
    let mut text = String::new();
    let _ = lock.rewind().and_then(|()| lock.read_to_string(&mut text));
    serde_json::from_str(&text).unwrap_or_default()
}

/// Whether `name` in `parent` is still the object `file` has open (a
/// profile deleted meanwhile is not).
fn still_there(parent: &File, name: &str, file: &File) -> bool {
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: an all-zero `stat` is a valid value for fstatat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `parent` is open, `c` NUL-terminated, `st` writable; all alive for the call.
    let found = unsafe { libc::fstatat(parent.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0;
    found && file.metadata().is_ok_and(|m| m.ino() == st.st_ino as u64 && m.dev() == st.st_dev as u64)
}

/// Takes profile `name` of `home` for `holder` (`session`: the CLI session,
/// `None` for a program's own client), creating it when it does not exist:
/// the folder and lock, or the in-use error naming who holds it.
pub fn take(home: &Path, name: &str, session: Option<&str>) -> Result<ProfileLock> {
    validate_name(name)?;
    let path = profiles_dir(home).join(name);
    let deadline = Instant::now() + TAKE_WAIT;
    let vanished = || io_error(&path, "create", io::ErrorKind::NotFound.into());
    loop {
        if Instant::now() >= deadline + TAKE_WAIT {
            return Err(vanished());
        }
        let profiles = open_profiles(home, true)?.ok_or_else(vanished)?;
        let Some(dir) = open_sub(&profiles, name, &path, true)? else { continue };
        let Some(mut lock) = open_lock(&dir, &path, true)? else { continue };
        if lock.try_lock_exclusive().is_err() {
            // Only shared locks (a look by `profile list`): wait it out.
            // An exclusive one is a holder's.
            let looked_at = lock.try_lock_shared().is_ok();
            if looked_at {
                let _ = FileExt::unlock(&lock);
            }
            if !looked_at || Instant::now() >= deadline {
                return Err(read_holder(&mut lock).in_use(name));
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // Deleted between the open and the lock: take the new one.
        if !still_there(&profiles, name, &dir) || !still_there(&dir, LOCK_FILE, &lock) {
            continue;
        }
        let holder = Holder { session: session.map(str::to_string), pid: std::process::id() };
        let text = serde_json::to_string(&holder).unwrap_or_default();
        let written = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| lock.write_all(text.as_bytes()));
        written.map_err(|e| io_error(&path.join(LOCK_FILE), "write", e))?;
        return Ok(ProfileLock { name: name.to_string(), path, lock });
    }
}

/// Who holds the profile whose lock is `lock`, if anyone: a shared lock
/// for a moment tells.
fn holder_of(lock: &mut File) -> Option<Holder> {
    match lock.try_lock_shared() {
        Ok(()) => {
            let _ = FileExt::unlock(lock);
            None
        }
        Err(_) => Some(read_holder(lock)),
    }
}

fn iso_mtime(meta: &std::fs::Metadata) -> String {
    let at = meta.modified().unwrap_or(UNIX_EPOCH);
    crate::log::iso_time(at)
}

/// The bytes of the files under `path`, links not followed.
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
}

/// `aluvia profile list`: every profile, by name.
pub fn list(home: &Path) -> Result<Vec<ProfileInfo>> {
    let Some(profiles) = open_profiles(home, false)? else { return Ok(Vec::new()) };
    let root = profiles_dir(home);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| io_error(&root, "read", e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| validate_session_name(n))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = root.join(&name);
        let Ok(Some(dir)) = open_sub(&profiles, &name, &path, false) else { continue };
        let lock = open_lock(&dir, &path, false).ok().flatten();
        let meta = match &lock {
            Some(l) => l.metadata(),
            None => dir.metadata(),
        };
        let last_used = meta.as_ref().map(iso_mtime).unwrap_or_default();
        let in_use_by = lock.and_then(|mut l| holder_of(&mut l)).map(|h| h.label());
        out.push(ProfileInfo { size_bytes: size_of(&path), name, last_used, in_use_by });
    }
    Ok(out)
}

/// The in-use error when profile `name` is held now (nothing is created):
/// what `session start` checks before it starts anything.
pub fn check_free(home: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let path = profiles_dir(home).join(name);
    let Some(profiles) = open_profiles(home, false)? else { return Ok(()) };
    let Some(dir) = open_sub(&profiles, name, &path, false)? else { return Ok(()) };
    match open_lock(&dir, &path, false)? {
        Some(mut lock) => holder_of(&mut lock).map_or(Ok(()), |h| Err(h.in_use(name))),
        None => Ok(()),
    }
}

/// `aluvia profile delete <name>`: removes the profile unless it is held.
pub fn delete(home: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let path = profiles_dir(home).join(name);
    let missing = || SessionError::ProfileNotFound { profile: name.to_string() };
    let profiles = open_profiles(home, false)?.ok_or_else(missing)?;
    let dir = open_sub(&profiles, name, &path, false)?.ok_or_else(missing)?;
    // Held while it is removed, so that no browser takes it meanwhile.
    let lock = open_lock(&dir, &path, true)?;
    if let Some(mut lock) = lock {
        if lock.try_lock_exclusive().is_err() {
            return Err(read_holder(&mut lock).in_use(name));
        }
        remove_tree(&path).map_err(|e| io_error(&path, "remove", e))?;
        drop(lock);
    }
    Ok(())
}

/// `remove_dir_all`, which removes links rather than what they point to.
fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::TempDir;

    #[test]
    fn a_profile_is_taken_once_and_kept_after_it_is_let_go() {
        let home = TempDir::new("profile-take");
        let held = take(home.path(), "work", Some("s1")).unwrap();
        assert!(held.path().ends_with(".aluvia/profiles/work"));
        std::fs::write(held.path().join("Cookies"), b"x").unwrap();
        let err = take(home.path(), "work", Some("s2")).unwrap_err();
        assert_eq!(err.to_string(), "Profile 'work' is in use by session 's1'.");
        assert_eq!(err.code(), "ProfileInUse");
        let listed = list(home.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].in_use_by.as_deref(), Some("s1"));
        assert!(listed[0].size_bytes >= 1);
        let err = delete(home.path(), "work").unwrap_err();
        assert_eq!(err.to_string(), "Profile 'work' is in use by session 's1'.");
        drop(held);
        assert_eq!(list(home.path()).unwrap()[0].in_use_by, None);
        let again = take(home.path(), "work", None).unwrap();
        assert!(again.path().join("Cookies").exists(), "kept after it was let go");
        assert_eq!(
            take(home.path(), "work", Some("s3")).unwrap_err().to_string(),
            format!("Profile 'work' is in use by another program (pid {}).", std::process::id())
        );
        drop(again);
        delete(home.path(), "work").unwrap();
        assert!(list(home.path()).unwrap().is_empty());
        assert_eq!(delete(home.path(), "work").unwrap_err().to_string(), "No profile named 'work'.");
        assert_eq!(take(home.path(), "../x", None).unwrap_err().code(), "ProfileInvalidName");
    }

    #[test]
    fn the_folders_are_private_and_links_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let home = TempDir::new("profile-safe");
        let held = take(home.path(), "p", None).unwrap();
        for dir in [home.path().join(".aluvia/profiles"), held.path().to_path_buf()] {
            assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
        }
        drop(held);
        // A link in place of `profiles`: refused, nothing written through it.
        let other = TempDir::new("profile-elsewhere");
        let home2 = TempDir::new("profile-link");
        std::fs::create_dir(home2.path().join(".aluvia")).unwrap();
        std::fs::set_permissions(home2.path().join(".aluvia"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(other.path(), home2.path().join(".aluvia/profiles")).unwrap();
        let err = take(home2.path(), "p", None).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(list(home2.path()).is_err());
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
        // A link as the profile itself, and as its lock file.
        let home3 = TempDir::new("profile-link2");
        drop(take(home3.path(), "q", None).unwrap());
        std::os::unix::fs::symlink(other.path(), home3.path().join(".aluvia/profiles/r")).unwrap();
        assert!(take(home3.path(), "r", None).is_err());
        let lock = home3.path().join(".aluvia/profiles/q").join(LOCK_FILE);
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(other.path().join("f"), &lock).unwrap();
        assert!(take(home3.path(), "q", None).is_err());
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }
}
