//! The engine of the Aluvia SDK, free of any Node.js binding: the REST client,
//! the rules engine, the control plane and the local smart proxy.

pub mod api;
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

pub use error::{AluviaError, Result};
