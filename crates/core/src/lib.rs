//! The engine of the Aluvia SDK, free of any Node.js binding: the REST client,
//! the rules engine, the control plane, the local smart proxy, Chromium with
//! block detection, and the CLI's background sessions.
//!
//! # Layers
//!
//! Each module uses only the modules listed before it (`tests/layers.rs`
//! enforces this order):
//!
//! 1. `error`, `task`, `text`, `log`, `rules`, `config`, `api`, `auth`: errors,
//!    blocking work off the async threads, cleaned text, logging, the rules
//!    engine, the shared connection config and the REST client (with the
//!    device-code login on top of it).
//! 2. `store`: the lock directory and its records, logs, names and the
//!    identity of the process a record names; storage only. `profile`: the
//!    persistent Chromium profiles of `~/.aluvia/profiles`.
//! 3. `proxy`, `detection`: the data plane and the block-detection rules.
//! 4. `rules_edit`, `control`: serialized rule edits and the control plane
//!    that keeps the config fresh.
//! 5. `browser`: Chromium over CDP; what it changes on a block (auto-unblock)
//!    is an action its owner hands it.
//! 6. `client`: proxy, control plane and browser as one client; it builds the
//!    auto-unblock action.
//! 7. `daemon`: the session daemon's launcher and `session close` (in the CLI
//!    process) and the daemon's life (in the daemon), built on a `client`.

/// `Debug` for a type holding a secret (the API key, the proxy password):
/// it prints only the fields named, and marks the rest as left out.
macro_rules! debug_without_secrets {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))$(.field(stringify!($field), &self.$field))*.finish_non_exhaustive()
            }
        }
    };
}

pub mod api;
pub mod auth;
pub mod browser;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detection;
pub mod error;
pub mod log;
pub mod profile;
pub mod proxy;
pub mod rules;
pub mod rules_edit;
pub mod store;
pub mod task;
pub mod text;

pub use error::{AluviaError, Result};
