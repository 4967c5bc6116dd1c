//! Claiming a session name: the check and the early lock file under one
//! directory lock, so that of two racing claims for one name exactly one wins.

use super::dir::LockDir;
use super::naming::{generate_name, validate_session_name, NameState, INVALID_NAME_MESSAGE};
use super::record::{LockData, LockRead};
use crate::error::AluviaError;

/// Why [`LockDir::claim`] did not hand out a name.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{}", INVALID_NAME_MESSAGE)]
    InvalidName,
    /// A live process holds the name; `lock` is its lock file.
    #[error("A browser session named '{name}' is already running.")]
    NameInUse { name: String, lock: Box<LockData> },
    #[error(transparent)]
    Io(#[from] AluviaError),
}

impl From<ClaimError> for AluviaError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Io(e) => e,
            other => AluviaError::Invalid(other.to_string()),
        }
    }
}

impl LockDir {
    /// Claims a session name and writes its early lock file (`initial`, with
    /// `session` set to the name and `pid` defaulting to this process when 0),
    /// all under the directory's exclusive lock, so of two racing claims for
    /// one name exactly one wins.
    ///
    /// A custom name must be valid; held by a live process → `NameInUse`; a
    /// stale or corrupt lock file is replaced. `None` generates a name per the
    /// naming algorithm (a corrupt lock file counts as taken there; a stale one
    /// is replaced).
    pub fn claim(&self, requested: Option<&str>, mut initial: LockData) -> Result<String, ClaimError> {
        if requested.is_some_and(|name| !validate_session_name(name)) {
            return Err(ClaimError::InvalidName);
        }
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
                return Err(ClaimError::NameInUse { name, lock: Box::new(lock) });
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
