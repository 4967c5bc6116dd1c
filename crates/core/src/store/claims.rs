//! Claiming a session name: the check and the early lock file under one
//! directory lock, so that of two racing claims for one name exactly one wins.

use super::dir::LockDir;
use super::naming::{generate_name, validate_session_name, NameState};
use super::owned::sweep_orphaned_dirs;
use super::record::{LockData, LockRead};
use super::session_error::SessionError;

impl LockDir {
    /// Claims a session name and writes its early lock file (`initial`, with
    /// `session` set to the name and `pid` defaulting to this process when 0),
    /// all under the directory's exclusive lock, so of two racing claims for
    /// one name exactly one wins.
    ///
    /// A custom name must be valid (else `InvalidName`); held by a live
    /// process → `NameInUse`, with that process's lock; a
    /// stale or corrupt lock file is replaced. `None` generates a name per the
    /// naming algorithm (a corrupt lock file counts as taken there; a stale one
    /// is replaced). Temp folders whose owner is gone are swept first
    /// ([`sweep_orphaned_dirs`]).
    pub fn claim(&self, requested: Option<&str>, mut initial: LockData) -> Result<String, SessionError> {
        if requested.is_some_and(|name| !validate_session_name(name)) {
            return Err(SessionError::InvalidName {});
        }
        sweep_orphaned_dirs();
        let _guard = self.lock_exclusive()?;
        let name = match requested {
            Some(name) => name.to_string(),
            None => {
                let mut failure = None;
                let name = generate_name(|candidate| match self.read_unlocked(candidate) {
                    Ok(None) => NameState::Free,
                    Ok(Some(LockRead::Valid(data))) if !data.is_live() => NameState::Stale,
                    Ok(Some(_)) => NameState::Taken,
                    Err(e) => {
                        failure.get_or_insert(e);
                        NameState::Taken
                    }
                });
                if let Some(e) = failure {
                    return Err(e.into());
                }
                name
            }
        };
        // Checked again for every name: the `session-{ts}` fallback is not
        // checked by the generator.
        if let Some(LockRead::Valid(lock)) = self.read_unlocked(&name)? {
            if lock.is_live() {
                return Err(SessionError::name_in_use(&name, &lock));
            }
        }
        if initial.pid == 0 {
            initial.own();
        }
        initial.session = Some(name.clone());
        self.write_unlocked(&name, &initial)?;
        Ok(name)
    }
}
