//! The connection config the proxy routes by, and the shared handle through
//! which the control plane swaps it and the proxy reads it lock-free.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::rules::RuleSet;

/// One snapshot of an account connection, as the proxy needs it.
#[derive(Clone)]
pub struct ConnectionConfig {
    pub connection_id: Option<String>,
    pub proxy_username: String,
    pub proxy_password: String,
    /// The rules as the API holds them.
    pub raw_rules: Vec<String>,
    /// The same rules, normalized once.
    pub rules: RuleSet,
    pub session_id: Option<String>,
    pub target_geo: Option<String>,
    pub etag: Option<String>,
}

// The credentials stay out of every debug print.
debug_without_secrets!(ConnectionConfig { connection_id, raw_rules, session_id, target_geo, etag });

/// Shared, atomically swapped config. `None` means "no config": route direct.
pub type ConfigHandle = Arc<ArcSwapOption<ConnectionConfig>>;

pub fn new_handle() -> ConfigHandle {
    Arc::new(ArcSwapOption::empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayProtocol {
    Http,
    Https,
}

impl GatewayProtocol {
    pub fn parse(s: &str) -> Option<GatewayProtocol> {
        match s {
            "http" => Some(GatewayProtocol::Http),
            "https" => Some(GatewayProtocol::Https),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            GatewayProtocol::Http => 8080,
            GatewayProtocol::Https => 8443,
        }
    }
}

/// Where the paid gateway lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub protocol: GatewayProtocol,
    pub host: String,
    pub port: u16,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { protocol: GatewayProtocol::Http, host: "gateway.aluvia.io".into(), port: 8080 }
    }
}
