//! Where a request or tunnel goes, and whether that is the proxy itself.
//!
//! A target on the proxy's own port at a loopback or unspecified address, in
//! any spelling a resolver or a browser accepts (`127.1`, `2130706433`,
//! `0x7f.0.0.1`, `0.0.0.0`, `[::1]`, `[::ffff:127.0.0.1]`, or a name that
//! resolves to one), would loop back into the proxy and hold every file
//! descriptor it has. Such targets are refused before anything is dialled.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::upstream::{authority_host, bare_host};
use crate::rules::normalize_host;

/// How long a name on the proxy's own port may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a request goes.
pub(crate) struct Target {
    /// As it goes into an authority (IPv6 in brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Normalized, for the rules and the counters.
    pub(crate) hostname: String,
}

impl Target {
    pub(crate) fn new(host: &str, port: Option<u16>, default_port: u16) -> Result<Target, &'static str> {
        let bare = bare_host(host);
        if bare.is_empty() {
            return Err("missing host");
        }
        let port = port.unwrap_or(default_port);
        if port == 0 {
            return Err("port 0 is not a valid target");
        }
        Ok(Target { host: authority_host(bare), port, hostname: normalize_host(bare) })
    }

    /// `host:port`, the port left out when it is the default.
    pub(crate) fn authority(&self, default_port: u16) -> String {
        if self.port == default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// True when this target is the proxy listening on `local`.
    pub(crate) async fn is_proxy(&self, local: SocketAddr) -> bool {
        self.port == local.port() && self.reaches_this_machine().await
    }

    /// True when this target is a browser session's DevTools endpoint (see
    /// [`super::endpoints`]).
    pub(crate) async fn is_control_endpoint(&self) -> bool {
        // A mutex and one stat of the lock directory; its files are read
        // again only when it changed.
        super::endpoints::is_control_port(self.port) && self.reaches_this_machine().await
    }

    /// A loopback or unspecified address in any spelling, or a name that
    /// resolves to one.
    async fn reaches_this_machine(&self) -> bool {
        if let Some(ip) = parse_ip_loose(&self.hostname) {
            return reaches_local(ip);
        }
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((self.hostname.as_str(), self.port))).await
        {
            Ok(Ok(mut addrs)) => addrs.any(|a| reaches_local(a.ip())),
            // Unresolvable: dialling it fails anyway, and cannot loop.
            _ => false,
        }
    }
}

/// A loopback or unspecified address (IPv4-mapped ones included): a
/// connection to it on the proxy's port would reach this machine.
fn reaches_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

/// An IP literal as resolvers and browsers read it: IPv6, dotted IPv4, and
/// the inet_aton forms (one to four parts, each decimal, octal with a leading
/// `0` or hex with `0x`; the last part fills the remaining bytes).
pub(crate) fn parse_ip_loose(host: &str) -> Option<IpAddr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_part(part)?);
    }
    let (last, head) = values.split_last()?;
    let mut addr: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= v << (8 * (3 - i));
    }
    let room = 8 * (4 - head.len());
    if room < 64 && *last >= 1u64 << room {
        return None;
    }
    addr |= last;
    u32::try_from(addr).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a)))
}

fn parse_part(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        // "0x" alone is 0, as inet_aton reads it.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix).ok().filter(|v| *v <= u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_ipv4_forms() {
        let v4 = |s: &str| parse_ip_loose(s).map(|ip| ip.to_string());
        assert_eq!(v4("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0x7f.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0177.0.0.01").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("127.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0").as_deref(), Some("0.0.0.0"));
        assert_eq!(v4("::ffff:127.0.0.1").as_deref(), Some("::ffff:127.0.0.1"));
        assert_eq!(v4("example.com"), None);
        assert_eq!(v4("1.2.3.4.5"), None);
        assert_eq!(v4("256.1"), None);
        assert_eq!(v4("1.2.65536"), None);
        assert_eq!(v4("4294967296"), None);
        assert_eq!(v4("08"), None);
    }

    #[tokio::test]
    async fn every_spelling_of_the_proxy_is_the_proxy() {
        let local: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        for host in
            ["127.0.0.1", "127.1", "2130706433", "0.0.0.0", "0", "127.9.8.7", "::1", "::ffff:127.0.0.1", "localhost"]
        {
            let t = Target::new(host, Some(4567), 80).unwrap();
            assert!(t.is_proxy(local).await, "{host}");
        }
        assert!(!Target::new("127.0.0.1", Some(4568), 80).unwrap().is_proxy(local).await);
        assert!(!Target::new("10.0.0.1", Some(4567), 80).unwrap().is_proxy(local).await);
    }
}
