//! Stale cleanup: the lock files of dead processes go, with the temp files of
//! writers that died and the Chromium profiles that killed daemons left
//! behind.

use std::fs;
use std::path::{Path, PathBuf};

use super::dir::LockDir;
use super::io::{check_name, TMP_PREFIX, TMP_SUFFIX};
use super::owned::sweep_orphaned_dirs;
use super::process::is_process_alive;
use super::record::{LockData, LockRead, PROFILE_DIR_PREFIX};
use crate::error::Result;

/// What [`LockDir::live_sessions`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveSessions {
    /// Lock files of live processes, sorted by name.
    pub live: Vec<LockData>,
    /// `(name, reason)` of lock files that are not valid: to be reported; left in place.
    pub corrupt: Vec<(String, String)>,
}

impl LockDir {
    /// Removes the lock file only if it names `pid` (a daemon cleaning up
    /// after itself must not remove a name someone else has since claimed).
    /// `true` when it was removed. When `pid` is dead (a force-killed
    /// daemon), the Chromium profile its lock records goes too, after the
    /// directory lock is released.
    pub fn remove_if_owned(&self, name: &str, pid: u32) -> Result<bool> {
        check_name(name)?;
        let profile = {
            let _guard = self.lock_exclusive()?;
            match self.read_unlocked(name)? {
                Some(LockRead::Valid(data)) if data.pid == pid => {
                    self.remove_unlocked(name)?;
                    if data.is_live() {
                        None
                    } else {
                        end_stale_browser(&data);
                        stale_profile(&data)
                    }
                }
                _ => return Ok(false),
            }
        };
        if let Some(profile) = profile {
            let _ = fs::remove_dir_all(profile);
        }
        Ok(true)
    }

    /// The live sessions, sorted by name, with `session` filled in from the
    /// file name when the lock file lacks it. Lock files of dead processes are
    /// removed (and so are temp files left by writers that died); corrupt lock
    /// files are returned as `(name, reason)` and left in place.
    ///
    /// The Chromium profiles that dead daemons left behind are removed too,
    /// after the directory lock is released (a large profile takes a while),
    /// and so are the temp folders of ours whose owner is gone
    /// ([`sweep_orphaned_dirs`]).
    pub fn live_sessions(&self) -> Result<LiveSessions> {
        let (found, stale_profiles) = self.sweep()?;
        for profile in stale_profiles {
            let _ = fs::remove_dir_all(profile);
        }
        sweep_orphaned_dirs();
        Ok(found)
    }

    /// [`LockDir::live_sessions`] under the directory lock, without touching
    /// profiles: the profiles of the stale locks it removed are returned.
    pub(super) fn sweep(&self) -> Result<(LiveSessions, Vec<PathBuf>)> {
        let _guard = self.lock_exclusive()?;
        let mut live = Vec::new();
        let mut corrupt = Vec::new();
        let mut stale_profiles = Vec::new();
        for (name, read) in self.list()? {
            match read {
                LockRead::Valid(mut data) if data.is_live() => {
                    data.session.get_or_insert(name);
                    live.push(data);
                }
                LockRead::Valid(data) => {
                    self.remove_unlocked(&name)?;
                    end_stale_browser(&data);
                    stale_profiles.extend(stale_profile(&data));
                }
                LockRead::Corrupt { name, reason } => corrupt.push((name, reason)),
            }
        }
        self.remove_orphaned_temp_files();
        Ok((LiveSessions { live, corrupt }, stale_profiles))
    }

    /// Best effort: `.cli-{name}.lock.{pid}.{hex}.tmp` whose writer is dead.
    fn remove_orphaned_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.path()) else { return };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(pid) = file_name
                .to_str()
                .filter(|f| f.starts_with(TMP_PREFIX))
                .and_then(|f| f.strip_suffix(TMP_SUFFIX))
                .and_then(|f| f.rsplit('.').nth(1))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !is_process_alive(pid) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Ends the Chromium a dead daemon recorded (`browserPid`, `browserStart`;
/// ours) if it is still that process: one with a persistent profile is told
/// to quit (SIGTERM) when its daemon dies, which it does unless it hangs.
fn end_stale_browser(data: &LockData) {
    let pid = data.extra.get("browserPid").and_then(serde_json::Value::as_u64).and_then(|p| u32::try_from(p).ok());
    let start = data.extra.get("browserStart").and_then(serde_json::Value::as_str);
    if let (Some(pid), Some(start)) = (pid, start) {
        if pid > 1 && super::process::is_recorded_process(pid, Some(start)) {
            // SAFETY: plain syscall; the pid was checked to be that browser just now.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// The Chromium profile a dead daemon left behind (`profileDir`, ours), to be
/// removed only when it is what the engine creates: a real directory named
/// [`PROFILE_DIR_PREFIX`]`*`, owned by us.
fn stale_profile(data: &LockData) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = Path::new(data.profile_dir.as_deref()?);
    let named = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PROFILE_DIR_PREFIX));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let ours = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid);
    (named && ours).then(|| dir.to_path_buf())
}
