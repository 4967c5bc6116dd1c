//! The local smart proxy (data plane).
//!
//! An HTTP/1.1 forward proxy on 127.0.0.1 in the shape of hyper's
//! `examples/http_proxy.rs`: absolute-form and origin-form requests are
//! forwarded over pooled upstream connections, `CONNECT` tunnels are relayed
//! with splice(2) between plain sockets (a buffered copy otherwise). Each request or tunnel reads the current config
//! (a lock-free snapshot) and goes direct or through the gateway, which gets
//! `Proxy-Authorization: Basic …` (a sensitive header) and, for tunnels, its
//! own `CONNECT`.

mod endpoints;
mod failures;
mod handler;
mod peer;
mod routes;
mod target;
mod traffic;
mod tunnel;
mod upstream;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigHandle, GatewayConfig};
use crate::error::AluviaError;
use crate::log::{Level, Logger};

use handler::{pooled_client, Shared};
use routes::Routes;
use upstream::Dialer;

pub use endpoints::ControlPort;
pub use failures::ProxyFailure;
pub use peer::measure_same_user_check;
// The browser's CDP endpoint serves the same owner as the proxy.
pub(crate) use peer::check as owner_check;
pub use traffic::{Route, TrafficEntry};

/// What the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `None` or `Some(0)`: an OS-assigned port.
    pub port: Option<u16>,
    pub gateway: GatewayConfig,
    /// Read once per request or tunnel; `None` inside routes everything direct.
    pub config: ConfigHandle,
    pub logger: Arc<Logger>,
}

/// The time and size limits of the data plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// TCP connect (and TLS handshake) to the target or the gateway.
    pub(crate) connect: Duration,
    /// From sending a request (or the gateway's CONNECT) to the response headers.
    pub(crate) response: Duration,
    /// How long `stop()` lets an in-flight request finish.
    pub(crate) grace: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub(crate) tunnel_idle: Duration,
    /// A tunnel one side of which has ended is closed once the other side
    /// has been quiet this long.
    pub(crate) half_close: Duration,
    /// Open client connections; past it new ones are closed at once.
    pub(crate) max_connections: usize,
}

/// The default bound on open client connections.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;

/// The bound, kept well under the process's descriptor limit: a tunnel holds
/// two sockets, and two pipes while it moves bytes.
fn connection_bound() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the local struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            let usable = (lim.rlim_cur as usize).saturating_sub(256) / 3;
            return usable.clamp(64, MAX_CLIENT_CONNECTIONS);
        }
    }
    MAX_CLIENT_CONNECTIONS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(30),
            response: Duration::from_secs(60),
            grace: Duration::from_secs(1),
            tunnel_idle: Duration::from_secs(300),
            half_close: Duration::from_secs(10),
            max_connections: connection_bound(),
        }
    }
}

/// Called after every config change; resolves once open connections on a
/// route the change altered are closed.
pub type RouteListener = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running proxy. Dropping it stops it in the background; `stop()` stops
/// it and waits.
pub struct ProxyServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl ProxyServer {
    /// Bind 127.0.0.1 and start serving on the current tokio runtime.
    pub async fn start(opts: ProxyOptions) -> Result<ProxyServer, AluviaError> {
        Self::start_with(opts, Limits::default()).await
    }

    pub(crate) async fn start_with(opts: ProxyOptions, limits: Limits) -> Result<ProxyServer, AluviaError> {
        let port = opts.port.unwrap_or(0);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| AluviaError::ProxyStart(format!("{e} (127.0.0.1:{port})")))?;
        let local_addr =
            listener.local_addr().map_err(|e| AluviaError::ProxyStart(format!("{e} (127.0.0.1:{port})")))?;

        let dialer = Arc::new(Dialer::new(opts.gateway, limits.connect).map_err(AluviaError::ProxyStart)?);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let traffic = Arc::default();
        let routes = Arc::new(Routes::default());
        let shared = Arc::new(Shared {
            direct: ArcSwap::from_pointee(pooled_client(&dialer, false, &traffic, &routes, &opts.config)),
            gateway: ArcSwapOption::empty(),
            open: Arc::default(),
            config: opts.config,
            logger: opts.logger,
            traffic,
            dialer,
            routes,
            limits,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            local_addr,
            failures: Default::default(),
            open_gate: std::sync::atomic::AtomicBool::new(true),
            gate: tokio::sync::Notify::new(),
        });

        // Decide how owners are looked up before the first connection.
        // (A loopback connection of our own and one netlink request, once.)
        let _ = peer::lookup();
        log_owner_check_off(&shared.logger, "proxy");
        tracker.spawn(accept_loop(shared.clone(), listener));
        if shared.logger.enabled(Level::Debug) {
            shared.logger.debug(format!("proxy listening on {local_addr}"));
        }
        Ok(ProxyServer { local_addr, shared, shutdown, tracker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open client connections, tunnels included.
    #[cfg(test)]
    pub(crate) fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Counters per (hostname, route), sorted by hostname then route.
    pub fn traffic(&self) -> Vec<TrafficEntry> {
        self.shared.traffic.snapshot()
    }

    /// Hold every request and tunnel from now on until [`ProxyServer::release`]
    /// (each waits at most the response limit): for a proxy started before
    /// its config is known, so that nothing is routed by an empty one.
    pub fn hold(&self) {
        self.shared.open_gate.store(false, Ordering::Release);
    }

    /// Serve the requests held by [`ProxyServer::hold`], and every one after.
    pub fn release(&self) {
        self.shared.open_gate.store(true, Ordering::Release);
        self.shared.gate.notify_waiters();
    }

    /// The gateway's last failure since start, if any.
    pub fn last_failure(&self) -> Option<ProxyFailure> {
        self.shared.failures.last()
    }

    /// What the control plane calls after each config change: tunnels and
    /// pooled connections on a route the change altered are closed before
    /// the returned future resolves. Holds the proxy weakly.
    pub fn route_listener(&self) -> RouteListener {
        let shared = Arc::downgrade(&self.shared);
        Arc::new(move || {
            let shared = shared.clone();
            Box::pin(async move {
                if let Some(shared) = shared.upgrade() {
                    shared.reroute().await;
                }
            })
        })
    }

    /// Stop accepting, end open connections and tunnels, and wait for them.
    /// Idempotent.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let open = shared.open.clone();
    let mut refused_logged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if open.load(Ordering::Relaxed) >= shared.limits.max_connections {
                        // Refused at once: closing it is the answer.
                        if !refused_logged {
                            shared.logger.warn(format!(
                                "proxy: {} client connections open, refusing new ones until some close",
                                shared.limits.max_connections
                            ));
                            refused_logged = true;
                        }
                        drop(stream);
                        continue;
                    }
                    refused_logged = false;
                    serve_connection(shared.clone(), stream, peer, OpenGuard::new(&open));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    shared.logger.debug(format!("proxy accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // The listener drops here: the port refuses from now on.
}

/// A system without any owner lookup is logged once per process.
static NO_OWNER_LOOKUP_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says once per process, on a system with no way to tell which user a
/// connection comes from, that the owner check is off.
pub(crate) fn log_owner_check_off(logger: &Logger, what: &str) {
    if peer::lookup() == Some(peer::Lookup::Off)
        && cfg!(target_os = "linux")
        && !NO_OWNER_LOOKUP_LOGGED.swap(true, Ordering::Relaxed)
    {
        logger.warn(format!(
            "{what}: this system offers no way to tell which user a connection comes from (no sock_diag, no /proc/net/tcp); the owner-only check is off"
        ));
    }
}

/// Counts one open client connection for as long as it lives (a tunnel
/// takes one of its own when its connection is handed over).
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(crate) fn new(open: &Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, open: OpenGuard) {
    let _ = stream.set_nodelay(true);
    let shutdown = shared.shutdown.clone();
    let grace = shared.limits.grace;
    let logger = shared.logger.clone();
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        let _open = open;
        // Only the owner's processes, decided before a byte is read: another
        // local user's connection, and one whose owner cannot be established,
        // is closed unanswered.
        let verdict = peer::check(peer, shared.local_addr);
        if !verdict.admits() {
            if logger.enabled(Level::Debug) {
                logger.debug(format!("proxy: refused a connection from {peer}: {}", verdict.reason()));
            }
            return;
        }
        let service = service_fn(move |req| shared.clone().handle(req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .preserve_header_case(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    logger.debug(format!("proxy connection ended: {e}"));
                }
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(grace, conn.as_mut()).await;
            }
        }
    });
}
