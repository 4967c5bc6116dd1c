//! The engine of the Aluvia SDK, free of any Node.js binding: the REST client,
//! the rules engine, the control plane and the local smart proxy.

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
pub mod detection;
pub mod error;
pub mod log;
pub mod proxy;
pub mod rules;
pub mod rules_edit;
pub mod session;
pub mod text;

pub use error::{AluviaError, Result};
