//! Blocking work (file I/O that may wait on a lock and fsync, waiting on a
//! process, removing a directory tree) run off the async threads.

use crate::error::{AluviaError, Result};

/// Runs `f` on tokio's blocking threads. Its error is returned as is; the
/// task itself failing (a panic) is an internal error.
pub async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AluviaError::Internal(format!("session task failed: {e}")))?
}
