//! Temp folders named after the process they belong to: a Chromium profile
//! (`aluvia-chromium-*`) and a `--run` script's temp folder (`aluvia-run-*`)
//! are `{prefix}{pid}-{start}-{n}` in the system temp folder, where `start` is
//! a digest of the owner's [`process_start`] and `n` tells apart the folders
//! of one process. Whoever sweeps can tell from the name alone whether the
//! owner is gone, even when it was killed before any lock file recorded the
//! folder (a daemon SIGKILLed during its start).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::process::{is_process_alive, process_start};
use super::record::PROFILE_DIR_PREFIX;

/// How the name of a `--run` script's temp folder starts.
pub const RUN_DIR_PREFIX: &str = "aluvia-run-";

/// The kinds of folder [`sweep_orphaned_dirs`] removes.
const OWNED_PREFIXES: [&str; 2] = [PROFILE_DIR_PREFIX, RUN_DIR_PREFIX];

/// Six hex digits of FNV-1a over the owner's [`process_start`] (stable across
/// versions, unlike std's hasher; short, as Chromium's socket path under the
/// profile must stay short). `000000` when the start cannot be read.
fn start_digest(pid: u32) -> String {
    let Some(start) = process_start(pid) else { return "000000".into() };
    let mut hash: u32 = 0x811c_9dc5;
    for byte in start.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", hash & 0xff_ffff)
}

/// Creates a new folder (0700) named after this process, with `prefix`, in
/// the system temp folder.
pub fn create_owned_dir(prefix: &str) -> io::Result<PathBuf> {
    create_owned_dir_in(&std::env::temp_dir(), prefix)
}

fn create_owned_dir_in(tmp: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let owner = format!("{prefix}{pid}-{}-", start_digest(pid));
    // A name taken already (another user's folder in a shared /tmp) is skipped.
    let mut last = None;
    for _ in 0..64 {
        let dir = tmp.join(format!("{owner}{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
}

/// The owner `(pid, start digest)` a folder's name records, if it is one of ours.
fn owner_of(name: &str) -> Option<(u32, &str)> {
    let rest = OWNED_PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    let mut parts = rest.split('-');
    let (pid, digest, n) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, hex: bool| {
        !s.is_empty() && s.chars().all(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() })
    };
    let ok =
        parts.next().is_none() && digits(pid, false) && digest.len() == 6 && digits(digest, true) && digits(n, false);
    ok.then(|| Some((pid.parse().ok()?, digest))).flatten()
}

/// Removes (best effort) every folder of ours in the system temp folder whose
/// owner is gone: its pid is dead or now names another process. Only real
/// directories owned by this user are touched.
pub fn sweep_orphaned_dirs() {
    sweep_orphaned_dirs_in(&std::env::temp_dir());
}

fn sweep_orphaned_dirs_in(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(tmp) else { return };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((pid, digest)) = file_name.to_str().and_then(owner_of) else { continue };
        if is_process_alive(pid) && start_digest(pid) == digest {
            continue;
        }
        let path = entry.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == euid) {
            let _ = fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{dead_pid, TempDir};

    #[test]
    fn owned_dirs_name_their_owner_and_go_with_it() {
        let tmp = TempDir::new("owned");
        let mine = create_owned_dir_in(tmp.path(), PROFILE_DIR_PREFIX).unwrap();
        let again = create_owned_dir_in(tmp.path(), RUN_DIR_PREFIX).unwrap();
        let name = mine.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(owner_of(&name).map(|(pid, _)| pid), Some(std::process::id()), "{name}");
        // Short: Chromium's socket lives under the profile.
        assert!(name.len() <= PROFILE_DIR_PREFIX.len() + 7 + 1 + 6 + 1 + 2, "{name}");

        // A dead owner, and a live pid whose start is not the recorded one.
        let dead = tmp.path().join(format!("{PROFILE_DIR_PREFIX}{}-{}-0", dead_pid(), start_digest(1)));
        let digest = start_digest(std::process::id());
        let other = if digest == "000000" { "000001" } else { "000000" };
        let reused = tmp.path().join(format!("{RUN_DIR_PREFIX}{}-{other}-0", std::process::id()));
        // Not ours to judge: other names, and a file.
        let foreign = tmp.path().join(format!("{PROFILE_DIR_PREFIX}0123456789ab"));
        let file = tmp.path().join(format!("{RUN_DIR_PREFIX}{}-{}-1", dead_pid(), digest));
        for dir in [&dead, &reused, &foreign] {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("x"), "x").unwrap();
        }
        fs::write(&file, "x").unwrap();
        sweep_orphaned_dirs_in(tmp.path());
        assert!(mine.is_dir() && again.is_dir(), "a live owner's folders stay");
        assert!(!dead.exists(), "a dead owner's folder goes");
        assert!(!reused.exists(), "a reused pid is not the owner");
        assert!(foreign.is_dir() && file.is_file());
    }
}
