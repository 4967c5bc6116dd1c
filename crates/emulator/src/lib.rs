//! The local emulator of the Aluvia API and gateway.
//!
//! [`Emulator::start`] binds three servers on 127.0.0.1 and runs them as tasks on
//! the caller's tokio runtime:
//!
//! - the REST API (`/v1/...`, with the device-code login of `aluvia auth`)
//!   and the admin endpoints (`/_emulator/...`);
//! - the gateway, an HTTP/1.1 forward proxy (absolute-form and `CONNECT`) that
//!   opens its upstream connections from [`exit_address`];
//! - optionally a small "protected site" that challenges direct visitors,
//!   over plain HTTP and over HTTPS (HTTP/1.1 and h2 by ALPN, with a
//!   certificate made at start).
//!
//! ```no_run
//! # async fn demo() -> Result<(), aluvia_emulator::EmulatorError> {
//! use aluvia_emulator::{Emulator, EmulatorOptions};
//! let emu = Emulator::start(EmulatorOptions::default()).await?;
//! println!("{} {}", emu.api_base_url(), emu.api_key());
//! emu.stop().await;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod gateway;
mod server;
mod site;
mod state;
mod tls;
mod util;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::AuthState;
use crate::state::{HostStats, SitePolicy, State};

/// How to start an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Port of the REST API; 0 = OS-assigned.
    pub api_port: u16,
    /// Port of the gateway; 0 = OS-assigned.
    pub gateway_port: u16,
    /// Also serve the protected site.
    pub site: bool,
    /// Port of the protected site; 0 = OS-assigned.
    pub site_port: u16,
    /// Port of the protected site over HTTPS; 0 = OS-assigned.
    pub site_tls_port: u16,
    /// The API key to accept; `None` generates `emu_` + 32 lowercase hex chars.
    pub api_key: Option<String>,
    /// Approve every `aluvia auth` login at once (with `api_key`).
    pub auto_approve: bool,
    /// Seconds between login polls the API asks for (default 5).
    pub auth_interval: Option<u64>,
    /// Seconds a login code lives (default 600).
    pub auth_expires_in: Option<u64>,
    /// Ours: the protected site's stricter rules, for the unblock ladder
    /// (also set at runtime through `/_emulator/site`).
    pub strict_site: StrictSite,
}

/// The protected site's stricter rules (ours). Direct visitors are always
/// challenged; these refuse some gateway visitors too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrictSite {
    /// Challenge the first session id each connection arrives with (a
    /// flagged IP): a new session id (`rotate-ip`) clears it, a new geo does not.
    pub flag_first_exit: bool,
    /// Serve only these geos (`None`: all): a visitor without one of them
    /// gets a 403 "Access denied" page until `set-geo` picks one.
    pub allowed_geos: Option<Vec<String>>,
}

impl StrictSite {
    /// The first geo that the gateway does not offer, if any.
    pub fn unknown_geo(&self) -> Option<&str> {
        self.allowed_geos.iter().flatten().map(String::as_str).find(|g| !state::is_geo(g))
    }
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            api_port: 0,
            gateway_port: 0,
            site: true,
            site_port: 0,
            site_tls_port: 0,
            api_key: None,
            auto_approve: false,
            auth_interval: None,
            auth_expires_in: None,
            strict_site: StrictSite::default(),
        }
    }
}

/// Errors of the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A listener could not bind.
    #[error("failed to bind the emulator {server} on {addr}: {source}")]
    Bind {
        /// Which server: "API", "gateway", "site" or "HTTPS site".
        server: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTPS site's certificate could not be made.
    #[error("{0}")]
    Tls(String),
    /// An option the emulator cannot take.
    #[error("{0}")]
    Option(String),
}

impl EmulatorError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EmulatorError::Bind { .. } => "bind_failed",
            EmulatorError::Tls(_) => "tls_failed",
            EmulatorError::Option(_) => "invalid_option",
        }
    }
}

/// One incarnation of the gateway listener (a `gatewayDown` fault ends it, and
/// bringing the gateway back starts a new one).
pub(crate) struct GatewayRun {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl GatewayRun {
    async fn shutdown(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// State shared by the servers.
pub(crate) struct Inner {
    api_key: String,
    state: Mutex<State>,
    /// Cancelled by `stop()`; every token of the emulator descends from it.
    root: CancellationToken,
    /// The API and site servers and their connections.
    tracker: TaskTracker,
    gateway_port: u16,
    gateway: tokio::sync::Mutex<Option<GatewayRun>>,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn host_stats(&self, connection_id: u64, host: &str) -> Arc<HostStats> {
        self.state().host_stats(connection_id, host)
    }

    /// Takes the gateway down (closing its listener and every open connection
    /// and tunnel) or brings it back on the same port.
    pub(crate) async fn set_gateway_down(self: &Arc<Self>, down: bool) -> Result<(), EmulatorError> {
        let mut run = self.gateway.lock().await;
        if down {
            if let Some(current) = run.take() {
                current.shutdown().await;
            }
        } else if run.is_none() && !self.root.is_cancelled() {
            let listener = server::bind_loopback(self.gateway_port, "gateway")?;
            *run = Some(gateway::spawn(self.clone(), listener));
        }
        Ok(())
    }
}

/// A running emulator. Dropping it cancels every server without waiting; call
/// [`Emulator::stop`] to wait until the ports are closed.
pub struct Emulator {
    inner: Arc<Inner>,
    api_port: u16,
    site_port: Option<u16>,
    site_tls: Option<(u16, Arc<tls::SiteTls>)>,
}

impl Emulator {
    /// Binds the servers on 127.0.0.1 and starts serving on the current tokio
    /// runtime.
    pub async fn start(opts: EmulatorOptions) -> Result<Emulator, EmulatorError> {
        if let Some(geo) = opts.strict_site.unknown_geo() {
            return Err(EmulatorError::Option(format!("allowedGeos: '{geo}' is not a geo the gateway offers")));
        }
        let api_key = match opts.api_key {
            Some(key) if !key.trim().is_empty() => key,
            _ => format!("emu_{}", uuid::Uuid::new_v4().simple()),
        };
        let api_listener = server::bind_loopback(opts.api_port, "API")?;
        let gateway_listener = server::bind_loopback(opts.gateway_port, "gateway")?;
        let site_listener = if opts.site { Some(server::bind_loopback(opts.site_port, "site")?) } else { None };
        let site_tls_listener =
            if opts.site { Some(server::bind_loopback(opts.site_tls_port, "HTTPS site")?) } else { None };
        let local_port = |listener: &tokio::net::TcpListener, server: &'static str, port: u16| {
            listener.local_addr().map(|addr| addr.port()).map_err(|source| EmulatorError::Bind {
                server,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                source,
            })
        };
        let api_port = local_port(&api_listener, "API", opts.api_port)?;
        let gateway_port = local_port(&gateway_listener, "gateway", opts.gateway_port)?;
        let site_port = match &site_listener {
            Some(listener) => Some(local_port(listener, "site", opts.site_port)?),
            None => None,
        };
        let site_tls_port = match &site_tls_listener {
            Some(listener) => Some(local_port(listener, "HTTPS site", opts.site_tls_port)?),
            None => None,
        };

        let inner = Arc::new(Inner {
            api_key,
            state: Mutex::new(State::new(AuthState::new(opts.auto_approve, opts.auth_interval, opts.auth_expires_in))),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            gateway_port,
            gateway: tokio::sync::Mutex::new(None),
        });

        *inner.gateway.lock().await = Some(gateway::spawn(inner.clone(), gateway_listener));

        let api_inner = inner.clone();
        server::serve(api_listener, inner.root.clone(), inner.tracker.clone(), move |req, _peer| {
            api::handle(api_inner.clone(), req)
        });

        inner.state().site_policy = SitePolicy::new(opts.strict_site);
        let site = Arc::new(site::Site::new(inner.clone()));
        if let Some(listener) = site_listener {
            let site = site.clone();
            server::serve(listener, inner.root.clone(), inner.tracker.clone(), move |req, peer| {
                site::handle(site.clone(), req, peer)
            });
        }
        let mut site_tls = None;
        if let (Some(listener), Some(port)) = (site_tls_listener, site_tls_port) {
            let certificate = Arc::new(tls::SiteTls::generate().map_err(EmulatorError::Tls)?);
            tls::serve(listener, certificate.clone(), inner.root.clone(), inner.tracker.clone(), move |req, peer| {
                site::handle(site.clone(), req, peer)
            });
            site_tls = Some((port, certificate));
        }

        Ok(Emulator { inner, api_port, site_port, site_tls })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn api_base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.api_port)
    }

    /// The API key the REST API accepts.
    pub fn api_key(&self) -> String {
        self.inner.api_key.clone()
    }

    /// Always `127.0.0.1`.
    pub fn gateway_host(&self) -> String {
        Ipv4Addr::LOCALHOST.to_string()
    }

    pub fn gateway_port(&self) -> u16 {
        self.inner.gateway_port
    }

    /// `http://127.0.0.1:SPORT/` when the site is served.
    pub fn site_url(&self) -> Option<String> {
        self.site_port.map(|port| format!("http://127.0.0.1:{port}/"))
    }

    /// `https://127.0.0.1:SPORT/` when the site is served: the same site
    /// over TLS (HTTP/1.1 and h2), with a certificate made at start.
    pub fn site_https_url(&self) -> Option<String> {
        self.site_tls.as_ref().map(|(port, _)| format!("https://127.0.0.1:{port}/"))
    }

    /// The HTTPS site's certificate (PEM), for clients that trust it.
    pub fn site_certificate(&self) -> Option<String> {
        self.site_tls.as_ref().map(|(_, tls)| tls.certificate_pem.clone())
    }

    /// base64(SHA-256) of the HTTPS site's public key: the pin a browser
    /// can be told to accept (Chromium's `--ignore-certificate-errors-spki-list`).
    pub fn site_spki(&self) -> Option<String> {
        self.site_tls.as_ref().map(|(_, tls)| tls.spki_sha256.clone())
    }

    /// Closes every listener and every open connection and tunnel, and waits
    /// until they are gone. Idempotent.
    pub async fn stop(&self) {
        self.inner.root.cancel();
        let gateway = self.inner.gateway.lock().await.take();
        if let Some(run) = gateway {
            run.shutdown().await;
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.inner.root.cancel();
    }
}

/// The source address the gateway binds its upstream connections to:
/// FNV-1a 64 of `"{session_id}|{target_geo}"` (absent = empty), mapped onto
/// 127.0.0.2 ..= 127.0.0.254.
pub fn exit_address(session_id: Option<&str>, target_geo: Option<&str>) -> Ipv4Addr {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let key = format!("{}|{}", session_id.unwrap_or(""), target_geo.unwrap_or(""));
    let hash = key.bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // 2 + (0..=252) fits in a u8.
    let last = 2 + (hash % 253) as u8;
    Ipv4Addr::new(127, 0, 0, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The napi binding shares the emulator across threads and awaits its
    /// futures on a multi-thread runtime.
    #[test]
    fn emulator_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Emulator>();
        send_sync::<EmulatorError>();
        let start = Emulator::start(EmulatorOptions::default());
        send(&start);
        drop(start);
        let _stop_is_send = |emu: &Emulator| send(&emu.stop());
    }

    #[test]
    fn exit_address_is_deterministic_and_never_127_0_0_1() {
        assert_eq!(exit_address(Some("a"), Some("us")), exit_address(Some("a"), Some("us")));
        assert_eq!(exit_address(None, None), exit_address(Some(""), Some("")));
        // FNV-1a 64 of "|" is 0xaf63f14c8602103b.
        let expected = 2 + (0xaf63_f14c_8602_103b_u64 % 253) as u8;
        assert_eq!(exit_address(None, None), Ipv4Addr::new(127, 0, 0, expected));
        for i in 0..2000 {
            let ip = exit_address(Some(&format!("session-{i}")), None);
            let last = ip.octets()[3];
            assert!((2..=254).contains(&last), "{ip}");
            assert_eq!(&ip.octets()[..3], &[127, 0, 0]);
        }
    }
}
