//! Open tunnels and pooled upstream connections, indexed by hostname, so that
//! a config change closes exactly those whose route it changes.
//!
//! Browsers keep `CONNECT` tunnels (often one HTTP/2 connection per host)
//! alive across page loads, so a tunnel opened under an old config would carry
//! the next load on the old route. Each tunnel registers here under its
//! hostname with the route it was opened on; [`Routes::reroute`] compares that
//! route with the one the new config gives and cancels the tunnels that
//! differ, then waits until they are closed. Registration and removal are
//! O(1); a reroute looks at each hostname with open connections once.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigHandle, ConnectionConfig};

/// How long a reroute waits for the tunnels it cancelled to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The route a connection was opened on. Two gateway routes are the same
/// only with the same credentials, `session_id` and `target_geo`: the
/// gateway picks the exit address from them when the connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RouteKey {
    Direct,
    Gateway(u64),
}

impl RouteKey {
    /// The route `hostname` takes under `cfg` (no config: direct).
    pub(crate) fn of(cfg: Option<&ConnectionConfig>, hostname: &str) -> RouteKey {
        match cfg {
            Some(cfg) if cfg.rules.should_proxy(hostname) => RouteKey::Gateway(gateway_fingerprint(cfg)),
            _ => RouteKey::Direct,
        }
    }
}

/// A digest of what selects the gateway's exit (never leaves the process).
pub(crate) fn gateway_fingerprint(cfg: &ConnectionConfig) -> u64 {
    let mut h = DefaultHasher::new();
    (&cfg.proxy_username, &cfg.proxy_password, &cfg.session_id, &cfg.target_geo).hash(&mut h);
    h.finish()
}

/// What kind of connection an entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `CONNECT` tunnel or an upgraded (WebSocket) connection: closed
    /// when its route changes.
    Tunnel,
    /// An upstream connection of a pooled client: the client is replaced
    /// when its route changes, which closes its idle connections.
    Pooled,
}

struct Entry {
    route: RouteKey,
    kind: Kind,
    token: CancellationToken,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    hosts: HashMap<String, HashMap<u64, Entry>>,
}

/// What a reroute found: tunnels closed, and whether a pooled client of
/// each route now carries idle connections on a stale route.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rerouted {
    pub(crate) tunnels_closed: usize,
    pub(crate) stale_direct_pool: bool,
    pub(crate) stale_gateway_pool: bool,
}

#[derive(Default)]
pub(crate) struct Routes {
    inner: Mutex<Inner>,
    /// Woken whenever an entry goes away.
    gone: Notify,
}

/// An open connection's place in [`Routes`]; dropping it removes the entry.
pub(crate) struct Registration {
    routes: Arc<Routes>,
    hostname: String,
    id: u64,
    token: CancellationToken,
}

impl Registration {
    /// Cancelled when a route change means this connection must close.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.routes.lock();
        if let Some(entries) = inner.hosts.get_mut(&self.hostname) {
            entries.remove(&self.id);
            if entries.is_empty() {
                inner.hosts.remove(&self.hostname);
            }
        }
        drop(inner);
        self.routes.gone.notify_waiters();
    }
}

impl Routes {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a connection to `hostname` opened on `route`, unless the
    /// current config (read under the registry's lock, so no reroute can slip
    /// in between) now gives another route: then `None`, and the caller
    /// decides again.
    pub(crate) fn register(
        self: &Arc<Self>,
        config: &ConfigHandle,
        hostname: &str,
        route: RouteKey,
        kind: Kind,
    ) -> Option<Registration> {
        let mut inner = self.lock();
        if kind == Kind::Tunnel && RouteKey::of(config.load().as_deref(), hostname) != route {
            return None;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let token = CancellationToken::new();
        inner.hosts.entry(hostname.to_string()).or_default().insert(id, Entry { route, kind, token: token.clone() });
        Some(Registration { routes: self.clone(), hostname: hostname.to_string(), id, token })
    }

    /// Cancel every tunnel whose route `cfg` changes and wait (bounded) until
    /// they are closed; report pooled clients holding stale connections.
    /// Call it after the new config is stored.
    pub(crate) async fn reroute(&self, cfg: Option<&ConnectionConfig>) -> Rerouted {
        let mut out = Rerouted::default();
        let mut cancelled: Vec<(String, u64)> = Vec::new();
        {
            let inner = self.lock();
            let fingerprint = cfg.map(gateway_fingerprint);
            for (hostname, entries) in &inner.hosts {
                let want = match cfg {
                    Some(c) if c.rules.should_proxy(hostname) => RouteKey::Gateway(fingerprint.unwrap_or_default()),
                    _ => RouteKey::Direct,
                };
                for (id, entry) in entries {
                    if entry.route == want {
                        continue;
                    }
                    match entry.kind {
                        Kind::Tunnel => {
                            entry.token.cancel();
                            cancelled.push((hostname.clone(), *id));
                        }
                        Kind::Pooled => match entry.route {
                            RouteKey::Direct => out.stale_direct_pool = true,
                            RouteKey::Gateway(_) => out.stale_gateway_pool = true,
                        },
                    }
                }
            }
        }
        out.tunnels_closed = cancelled.len();
        if !cancelled.is_empty() {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.until_gone(&cancelled)).await;
        }
        out
    }

    async fn until_gone(&self, ids: &[(String, u64)]) {
        loop {
            let notified = self.gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let open = {
                let inner = self.lock();
                ids.iter().any(|(host, id)| inner.hosts.get(host).is_some_and(|e| e.contains_key(id)))
            };
            if !open {
                return;
            }
            notified.await;
        }
    }

    /// Open tunnels (for tests and figures).
    #[cfg(test)]
    pub(crate) fn open_tunnels(&self) -> usize {
        self.lock().hosts.values().flat_map(|e| e.values()).filter(|e| e.kind == Kind::Tunnel).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::new_handle;
    use crate::rules::RuleSet;

    fn cfg(rules: &[&str], session: Option<&str>) -> Arc<ConnectionConfig> {
        Arc::new(ConnectionConfig {
            connection_id: None,
            proxy_username: "u".into(),
            proxy_password: "p".into(),
            raw_rules: rules.iter().map(|r| r.to_string()).collect(),
            rules: RuleSet::new(rules),
            session_id: session.map(str::to_string),
            target_geo: None,
            etag: None,
        })
    }

    #[tokio::test]
    async fn reroute_cancels_only_the_tunnels_whose_route_changed() {
        let routes = Arc::new(Routes::default());
        let handle = new_handle();
        handle.store(Some(cfg(&["b.com"], Some("s1"))));
        let c = handle.load_full();
        let a = routes.register(&handle, "a.com", RouteKey::of(c.as_deref(), "a.com"), Kind::Tunnel).unwrap();
        let b = routes.register(&handle, "b.com", RouteKey::of(c.as_deref(), "b.com"), Kind::Tunnel).unwrap();
        let pooled = routes.register(&handle, "c.com", RouteKey::Direct, Kind::Pooled).unwrap();
        // A registration on a route the config no longer gives is refused.
        assert!(routes.register(&handle, "b.com", RouteKey::Direct, Kind::Tunnel).is_none());

        // a.com moves to the gateway; b.com stays on the same gateway route.
        let next = cfg(&["a.com", "b.com"], Some("s1"));
        handle.store(Some(next.clone()));
        let wait = tokio::spawn({
            let routes = routes.clone();
            async move { routes.reroute(Some(&next)).await }
        });
        // The reroute waits for the cancelled tunnel to close.
        a.token().cancelled().await;
        assert!(!b.token().is_cancelled());
        drop(a);
        let done = wait.await.unwrap();
        assert_eq!(done, Rerouted { tunnels_closed: 1, ..Default::default() });

        // A new session id changes every gateway route; c.com stays direct.
        let rotated = cfg(&["a.com", "b.com"], Some("s2"));
        handle.store(Some(rotated.clone()));
        let routes2 = routes.clone();
        let wait = tokio::spawn(async move { routes2.reroute(Some(&rotated)).await });
        b.token().cancelled().await;
        drop(b);
        assert_eq!(wait.await.unwrap().tunnels_closed, 1);
        assert_eq!(routes.open_tunnels(), 0);

        // c.com going through the gateway leaves the direct pool stale.
        let all = cfg(&["*"], Some("s2"));
        assert!(routes.reroute(Some(&all)).await.stale_direct_pool);
        drop(pooled);
        assert_eq!(routes.reroute(None).await, Rerouted::default());
    }
}
