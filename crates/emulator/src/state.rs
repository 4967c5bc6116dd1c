//! The emulator's data: connections, carried traffic and injected faults.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use crate::auth::AuthState;

/// The first `connection_id` handed out.
pub(crate) const FIRST_CONNECTION_ID: u64 = 3449;

/// The prepaid balance of the emulated account, in GB.
pub(crate) const STARTING_BALANCE_GB: f64 = 10.0;

/// Bytes per GB in the account figures (decimal, as bandwidth is billed).
pub(crate) const BYTES_PER_GB: f64 = 1_000_000_000.0;

/// The geos the emulated gateway offers: `(code, label)`.
pub(crate) const GEOS: &[(&str, &str)] = &[
    ("us", "United States"),
    ("us_ca", "United States - California"),
    ("us_ny", "United States - New York"),
    ("us_tx", "United States - Texas"),
    ("us_fl", "United States - Florida"),
    ("gb", "United Kingdom"),
    ("de", "Germany"),
    ("fr", "France"),
    ("ca", "Canada"),
    ("au", "Australia"),
    ("jp", "Japan"),
    ("br", "Brazil"),
    ("in", "India"),
];

pub(crate) fn is_geo(code: &str) -> bool {
    GEOS.iter().any(|(c, _)| *c == code)
}

/// One account connection (a set of proxy credentials with its settings).
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub id: u64,
    pub username: String,
    pub password: String,
    pub rules: Vec<String>,
    pub session_id: Option<String>,
    pub target_geo: Option<String>,
    pub description: Option<String>,
    pub created_at: String,
    pub version: u64,
}

impl Connection {
    pub(crate) fn new(id: u64, created_at: String) -> Self {
        let mut rng = rand::thread_rng();
        let username = format!("emu_user_{:08x}", rng.gen::<u32>());
        let password: String = (&mut rng).sample_iter(&Alphanumeric).take(24).map(char::from).collect();
        Connection {
            id,
            username,
            password,
            rules: Vec::new(),
            session_id: None,
            target_geo: None,
            description: None,
            created_at,
            version: 1,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "connection_id": self.id,
            "proxy_username": self.username,
            "proxy_password": self.password,
            "rules": self.rules,
            "session_id": self.session_id,
            "target_geo": self.target_geo,
            "description": self.description,
            "created_at": self.created_at,
        })
    }

    /// The strong entity tag of the current version, quotes included.
    pub(crate) fn etag(&self) -> String {
        format!("\"c{}-v{}\"", self.id, self.version)
    }
}

/// Traffic the gateway carried for one connection to one hostname.
#[derive(Debug, Default)]
pub(crate) struct HostStats {
    pub requests: AtomicU64,
    pub tunnels: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl HostStats {
    pub(crate) fn add_up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.tunnels.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }
}

/// Faults injected through `/_emulator/faults`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// Status the next /v1 requests answer with.
    pub api_status: Option<u16>,
    /// How many more requests get `api_status`; `None` = until cleared.
    pub api_fault_count: Option<u64>,
    /// Delay before every /v1 answer.
    pub api_delay_ms: Option<u64>,
    pub gateway_down: bool,
}

impl Faults {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "apiStatus": self.api_status,
            "apiFaultCount": self.api_fault_count,
            "apiDelayMs": self.api_delay_ms,
            "gatewayDown": self.gateway_down,
        })
    }

    /// The status to fail the current /v1 request with, consuming one count.
    pub(crate) fn take_api_fault(&mut self) -> Option<u16> {
        let status = self.api_status?;
        match self.api_fault_count {
            None => Some(status),
            Some(0) => {
                self.api_status = None;
                self.api_fault_count = None;
                None
            }
            Some(n) => {
                if n <= 1 {
                    self.api_status = None;
                    self.api_fault_count = None;
                } else {
                    self.api_fault_count = Some(n - 1);
                }
                Some(status)
            }
        }
    }
}

/// The exits the gateway opened lately: how many it remembers.
const EXITS_KEPT: usize = 8192;

/// Which connection, session and geo an upstream connection of the gateway
/// left for, by its source address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    pub connection_id: u64,
    pub session_id: Option<String>,
    pub target_geo: Option<String>,
}

/// The gateway's recent upstream connections, by their local address.
#[derive(Debug, Default)]
pub(crate) struct Exits {
    by_addr: HashMap<SocketAddr, Exit>,
    order: VecDeque<SocketAddr>,
}

impl Exits {
    pub(crate) fn record(&mut self, addr: SocketAddr, exit: Exit) {
        if self.by_addr.insert(addr, exit).is_none() {
            self.order.push_back(addr);
        }
        while self.order.len() > EXITS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_addr.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, addr: &SocketAddr) -> Option<&Exit> {
        self.by_addr.get(addr)
    }
}

/// The protected site's stricter rules (ours, for the unblock ladder): the
/// first session id each connection arrives with is a flagged IP (cleared
/// by rotating), and only the allowed geos are served (cleared by setting
/// one of them).
#[derive(Debug, Default, Clone)]
pub(crate) struct SitePolicy {
    pub flag_first_exit: bool,
    /// `None`: every geo (and none) is served.
    pub allowed_geos: Option<Vec<String>>,
    /// The session id each connection first reached the site with.
    pub first_sessions: HashMap<u64, Option<String>>,
}

/// Why the site refuses a gateway visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The connection's first exit address: a flagged IP.
    Flagged,
    /// A geo the site does not serve.
    Geo,
}

impl SitePolicy {
    /// The policy `strict` asks for, with no connection seen yet.
    pub(crate) fn new(strict: crate::StrictSite) -> SitePolicy {
        SitePolicy {
            flag_first_exit: strict.flag_first_exit,
            allowed_geos: strict.allowed_geos,
            first_sessions: HashMap::new(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({ "flagFirstExit": self.flag_first_exit, "allowedGeos": self.allowed_geos })
    }

    /// The site's verdict on a visitor that came out of the gateway as
    /// `exit` (`None`: not from the gateway, or not known).
    pub(crate) fn refuses(&mut self, exit: Option<&Exit>) -> Option<Refusal> {
        if let (true, Some(exit)) = (self.flag_first_exit, exit) {
            let first = self.first_sessions.entry(exit.connection_id).or_insert_with(|| exit.session_id.clone());
            if *first == exit.session_id {
                return Some(Refusal::Flagged);
            }
        }
        match &self.allowed_geos {
            Some(allowed) if !exit.and_then(|e| e.target_geo.as_ref()).is_some_and(|g| allowed.contains(g)) => {
                Some(Refusal::Geo)
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub next_id: u64,
    pub connections: BTreeMap<u64, Connection>,
    /// connection id → hostname → counters. Kept after a connection is deleted.
    pub traffic: BTreeMap<u64, BTreeMap<String, Arc<HostStats>>>,
    pub faults: Faults,
    /// The logins of `aluvia auth`.
    pub auth: AuthState,
    /// Where the gateway's recent upstream connections left from.
    pub exits: Exits,
    /// The protected site's stricter rules.
    pub site_policy: SitePolicy,
}

impl State {
    pub(crate) fn new(auth: AuthState) -> Self {
        State {
            next_id: FIRST_CONNECTION_ID,
            connections: BTreeMap::new(),
            traffic: BTreeMap::new(),
            faults: Faults::default(),
            auth,
            exits: Exits::default(),
            site_policy: SitePolicy::default(),
        }
    }

    pub(crate) fn host_stats(&mut self, connection_id: u64, host: &str) -> Arc<HostStats> {
        self.traffic.entry(connection_id).or_default().entry(host.to_owned()).or_default().clone()
    }

    /// (bytes, requests, tunnels) carried for one connection.
    pub(crate) fn connection_totals(&self, connection_id: u64) -> (u64, u64, u64) {
        let mut totals = (0, 0, 0);
        if let Some(hosts) = self.traffic.get(&connection_id) {
            for stats in hosts.values() {
                let (requests, tunnels, up, down) = stats.snapshot();
                totals.0 += up + down;
                totals.1 += requests;
                totals.2 += tunnels;
            }
        }
        totals
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.traffic.keys().map(|id| self.connection_totals(*id).0).sum()
    }
}

/// GB with byte precision, without float noise in the last digits.
pub(crate) fn round_gb(gb: f64) -> f64 {
    (gb * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(connection_id: u64, session_id: Option<&str>, target_geo: Option<&str>) -> Exit {
        Exit { connection_id, session_id: session_id.map(str::to_owned), target_geo: target_geo.map(str::to_owned) }
    }

    #[test]
    fn the_stricter_site_flags_each_connections_first_session_and_serves_only_its_geos() {
        let mut open = SitePolicy::default();
        assert_eq!(open.refuses(Some(&exit(1, None, None))), None);
        let mut policy =
            SitePolicy::new(crate::StrictSite { flag_first_exit: true, allowed_geos: Some(vec!["us_ca".into()]) });
        // The first session a connection arrives with stays flagged, whatever the geo.
        assert_eq!(policy.refuses(Some(&exit(1, None, None))), Some(Refusal::Flagged));
        assert_eq!(policy.refuses(Some(&exit(1, None, Some("us_ca")))), Some(Refusal::Flagged));
        // Rotated: no longer flagged, but the geo is not served until it is set.
        assert_eq!(policy.refuses(Some(&exit(1, Some("s2"), None))), Some(Refusal::Geo));
        assert_eq!(policy.refuses(Some(&exit(1, Some("s2"), Some("us_ny")))), Some(Refusal::Geo));
        assert_eq!(policy.refuses(Some(&exit(1, Some("s2"), Some("us_ca")))), None);
        // Each connection has its own first session.
        assert_eq!(policy.refuses(Some(&exit(2, Some("s2"), Some("us_ca")))), Some(Refusal::Flagged));
        // A visitor the gateway did not send is outside every allowed geo.
        assert_eq!(policy.refuses(None), Some(Refusal::Geo));
    }

    #[test]
    fn exits_are_remembered_by_address_and_bounded() {
        let mut exits = Exits::default();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 9], port));
        for port in 0..=EXITS_KEPT as u16 {
            exits.record(addr(port), exit(1, Some("s"), None));
        }
        assert_eq!(exits.get(&addr(0)), None, "the oldest is dropped");
        assert_eq!(exits.get(&addr(EXITS_KEPT as u16)), Some(&exit(1, Some("s"), None)));
        exits.record(addr(1), exit(2, None, Some("de")));
        assert_eq!(exits.get(&addr(1)).map(|e| e.connection_id), Some(2));
    }
}
