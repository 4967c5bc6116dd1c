//! The lock directory: where it is, and the checks that make it safe to use in
//! a shared temp directory.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{AluviaError, Result};

/// The lock directory's name inside the OS temp directory.
pub const LOCK_DIR_NAME: &str = "aluvia-sdk";

/// The temp directory as Node's `os.tmpdir()` sees it on Unix: `$TMPDIR`, else
/// `$TMP`, else `$TEMP`, else `/tmp` (empty values are skipped), with one
/// trailing slash stripped.
pub fn os_tmpdir() -> PathBuf {
    tmpdir_from(|var| std::env::var_os(var))
}

fn tmpdir_from(get: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    for var in ["TMPDIR", "TMP", "TEMP"] {
        if let Some(value) = get(var) {
            if value.is_empty() {
                continue;
            }
            let mut bytes = value.into_vec();
            if bytes.len() > 1 && bytes.ends_with(b"/") {
                bytes.pop();
            }
            return PathBuf::from(OsString::from_vec(bytes));
        }
    }
    PathBuf::from("/tmp")
}

/// A verified lock directory: a real directory (not a symlink), owned by the
/// current effective user, with no group or other permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    path: PathBuf,
}

/// This user's lock directory: `{os tmpdir}/aluvia-sdk`, unless another user
/// holds that name first (on a shared temp directory anyone may create it,
/// and in a sticky `/tmp` its victim could not remove it): then
/// `{os tmpdir}/aluvia-sdk-{uid}`. Every reader resolves it this way.
pub fn default_path() -> PathBuf {
    default_path_in(&os_tmpdir())
}

fn default_path_in(tmp: &Path) -> PathBuf {
    let shared = tmp.join(LOCK_DIR_NAME);
    match fs::symlink_metadata(&shared) {
        Ok(meta) if meta.uid() != euid() => fallback_path(tmp),
        _ => shared,
    }
}

fn fallback_path(tmp: &Path) -> PathBuf {
    tmp.join(format!("{LOCK_DIR_NAME}-{}", euid()))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl LockDir {
    /// This user's lock directory ([`default_path`]), created and verified
    /// as in [`LockDir::open_at`].
    pub fn open_default() -> Result<LockDir> {
        let path = default_path();
        match LockDir::open_at(path.clone()) {
            // Another user made the shared name between our look and our
            // mkdir: this user's own name then.
            Err(_) if path.file_name() == Some(LOCK_DIR_NAME.as_ref()) && default_path() != path => {
                LockDir::open_at(default_path())
            }
            opened => opened,
        }
    }

    /// This user's lock directory when it exists and passes the checks;
    /// nothing is created.
    pub fn existing_default() -> Option<LockDir> {
        let path = default_path();
        verify(&path).ok().map(|()| LockDir { path })
    }

    /// [`LockDir::open_default`] on a blocking thread, for async callers.
    pub async fn open_default_async() -> Result<LockDir> {
        crate::task::off_thread(LockDir::open_default).await
    }

    /// Creates `path` with mode 0700 when it is missing (its parent must
    /// exist), then refuses it unless it is a directory, not a symlink, owned
    /// by the current effective uid and without group/other permission bits.
    pub fn open_at(path: PathBuf) -> Result<LockDir> {
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                // The umask may have taken bits away; make it exactly 0700.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(|e| {
                    AluviaError::Internal(format!("Could not set the mode of lock directory {}: {e}", path.display()))
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(AluviaError::Internal(format!("Could not create lock directory {}: {e}", path.display())))
            }
        }
        verify(&path)?;
        Ok(LockDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cli-{name}.lock`. `name` is not checked here: callers pass validated
    /// names (see [`super::validate_session_name`]).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("cli-{name}.lock"))
    }

    /// `cli-{name}.log`, the daemon's stdout and stderr.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("cli-{name}.log"))
    }
}

fn verify(path: &Path) -> Result<()> {
    let refuse =
        |why: String| AluviaError::Invalid(format!("Refusing to use lock directory {}: {why}", path.display()));
    let meta = fs::symlink_metadata(path)
        .map_err(|e| AluviaError::Internal(format!("Could not inspect lock directory {}: {e}", path.display())))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symlink. Remove it.".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory. Remove it.".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not by you (uid {me}). Remove it or fix its owner.",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode is {mode:04o}, expected 0700. Run chmod 700 {} or remove it.",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another user's `aluvia-sdk` (a folder, or a symlink they made) sends
    /// this user to `aluvia-sdk-{uid}`; this user's own stays in use.
    #[test]
    fn another_users_lock_dir_name_leads_to_this_users_own() {
        let tmp = std::env::temp_dir().join(format!("aluvia-dir-test-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&tmp).unwrap();
        let shared = tmp.join(LOCK_DIR_NAME);
        assert_eq!(default_path_in(&tmp), shared, "nothing there yet");
        fs::DirBuilder::new().mode(0o700).create(&shared).unwrap();
        assert_eq!(default_path_in(&tmp), shared, "this user's own");
        if euid() == 0 {
            std::os::unix::fs::lchown(&shared, Some(65534), Some(65534)).unwrap();
            assert_eq!(default_path_in(&tmp), tmp.join(format!("aluvia-sdk-{}", euid())));
            fs::remove_dir(&shared).unwrap();
            std::os::unix::fs::symlink("/", &shared).unwrap();
            std::os::unix::fs::lchown(&shared, Some(65534), Some(65534)).unwrap();
            assert_eq!(default_path_in(&tmp), tmp.join(format!("aluvia-sdk-{}", euid())));
            let own = LockDir::open_at(default_path_in(&tmp)).unwrap();
            assert_eq!(fs::metadata(own.path()).unwrap().mode() & 0o7777, 0o700);
        } else {
            eprintln!("skipped the other-user half: needs root to chown");
        }
        fs::remove_dir_all(&tmp).unwrap();
    }
    use crate::store::testutil::TempDir;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn session_dir_is_created_0700_and_reopened() {
        let tmp = TempDir::new("dir");
        let path = tmp.path().join("aluvia-sdk");
        let dir = LockDir::open_at(path.clone()).unwrap();
        assert_eq!(dir.path(), path);
        assert_eq!(mode_of(&path), 0o700);
        // Opening an existing, correct directory is fine.
        LockDir::open_at(path.clone()).unwrap();
        assert_eq!(dir.lock_path("a-b"), path.join("cli-a-b.lock"));
        assert_eq!(dir.log_path("a-b"), path.join("cli-a-b.log"));
    }

    #[test]
    fn session_dir_missing_parent_is_an_error() {
        let tmp = TempDir::new("dir-parent");
        let path = tmp.path().join("missing").join("aluvia-sdk");
        let err = LockDir::open_at(path.clone()).unwrap_err();
        assert!(matches!(err, AluviaError::Internal(_)), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn session_dir_refuses_symlink() {
        let tmp = TempDir::new("dir-link");
        let real = tmp.path().join("real");
        fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
        let link = tmp.path().join("aluvia-sdk");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = LockDir::open_at(link.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Refusing to use lock directory {}: it is a symlink. Remove it.", link.display())
        );
    }

    #[test]
    fn session_dir_refuses_group_or_other_bits() {
        let tmp = TempDir::new("dir-mode");
        let path = tmp.path().join("aluvia-sdk");
        fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let err = LockDir::open_at(path.clone()).unwrap_err();
        assert!(matches!(err, AluviaError::Invalid(_)));
        assert!(err.to_string().contains("its mode is 0755, expected 0700"), "{err}");
        // And it was left alone.
        assert_eq!(mode_of(&path), 0o755);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o710)).unwrap();
        assert!(LockDir::open_at(path).unwrap_err().to_string().contains("0710"));
    }

    #[test]
    fn session_dir_refuses_a_file() {
        let tmp = TempDir::new("dir-file");
        let path = tmp.path().join("aluvia-sdk");
        fs::write(&path, b"x").unwrap();
        let err = LockDir::open_at(path).unwrap_err();
        assert!(err.to_string().contains("it is not a directory"), "{err}");
    }

    #[test]
    fn session_dir_refuses_another_owner() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let tmp = TempDir::new("dir-owner");
        let path = tmp.path().join("aluvia-sdk");
        fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = LockDir::open_at(path.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Refusing to use lock directory {}: it is owned by uid 65534, not by you (uid 0). Remove it or fix its owner.",
                path.display()
            )
        );
    }

    #[test]
    fn session_tmpdir_follows_node() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| OsString::from(*v))
        };
        assert_eq!(tmpdir_from(env(&[])), PathBuf::from("/tmp"));
        assert_eq!(tmpdir_from(env(&[("TMPDIR", "/var/t/")])), PathBuf::from("/var/t"));
        assert_eq!(tmpdir_from(env(&[("TMPDIR", "/")])), PathBuf::from("/"));
        assert_eq!(tmpdir_from(env(&[("TMPDIR", ""), ("TMP", "/a"), ("TEMP", "/b")])), PathBuf::from("/a"));
        assert_eq!(tmpdir_from(env(&[("TEMP", "/b//")])), PathBuf::from("/b/"));
        // The real one is a usable path.
        assert!(!os_tmpdir().as_os_str().is_empty());
    }
}
