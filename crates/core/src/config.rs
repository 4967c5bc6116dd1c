//! The connection config the proxy routes by, and the shared handle through
//! which the control plane swaps it and the proxy reads it lock-free.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::rules::RuleSet;

/// The one rule for a port the SDK takes (a client's, the emulator's, a CLI
/// flag's or an environment variable's): an integer from 0 to 65535. Each
/// caller words its own error.
pub fn port_number(value: f64) -> Option<u16> {
    (value.is_finite() && value.fract() == 0.0 && (0.0..=65535.0).contains(&value)).then_some(value as u16)
}

/// A connection id as a client option takes it, a number or its text: any
/// finite number, as the text the API is sent (`3449`, not `3449.0`).
pub fn connection_id(number: Option<f64>, text: Option<&str>) -> Option<String> {
    match (number, text.map(str::trim)) {
        (Some(n), _) if n.is_finite() => Some(if n.fract() == 0.0 { format!("{n:.0}") } else { n.to_string() }),
        (None, Some(t)) if t.parse::<f64>().is_ok_and(f64::is_finite) => Some(t.to_string()),
        _ => None,
    }
}

/// A connection id as the CLI takes it (`--connection-id`, MCP's
/// `connectionId`): a positive integer in decimal digits, at most 2^53 - 1
/// (what a JS number holds exactly).
pub fn cli_connection_id(text: &str) -> Option<u64> {
    const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| (1..=MAX_SAFE_INTEGER).contains(n))
}

/// [`port_number`] for text: decimal digits only.
pub fn port_text(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().and_then(|n| port_number(f64::from(n)))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_an_integer_from_0_to_65535() {
        assert_eq!(port_number(0.0), Some(0));
        assert_eq!(port_number(65535.0), Some(65535));
        for bad in [-1.0, 65536.0, 80.5, f64::NAN, f64::INFINITY] {
            assert_eq!(port_number(bad), None, "{bad}");
        }
        assert_eq!(port_text("080"), Some(80));
        assert_eq!(port_text("000000000000000000000000000000080"), Some(80));
        for bad in ["", "+80", "-1", "8o", "80 ", "65536", "99999999999999999999", "1e3", "0x10"] {
            assert_eq!(port_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn connection_ids_of_the_client_and_of_the_cli() {
        assert_eq!(connection_id(Some(3449.0), None).as_deref(), Some("3449"));
        assert_eq!(connection_id(Some(1.5), None).as_deref(), Some("1.5"));
        assert_eq!(connection_id(None, Some(" 12 ")).as_deref(), Some("12"));
        assert_eq!(connection_id(Some(f64::NAN), None), None);
        assert_eq!(connection_id(None, Some("abc")), None);
        assert_eq!(connection_id(None, Some("inf")), None);
        assert_eq!(cli_connection_id("3449"), Some(3449));
        assert_eq!(cli_connection_id("9007199254740991"), Some(9_007_199_254_740_991));
        for bad in ["0", "", "-1", "1.5", "+1", "9007199254740992", "1e3", " 1"] {
            assert_eq!(cli_connection_id(bad), None, "{bad}");
        }
    }
}
