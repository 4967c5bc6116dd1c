//! Per-request work: parse the target, route it, forward it (pooled) or
//! open a tunnel, and turn every failure into a one-line answer.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Display;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::failures::Failures;
use super::routes::{gateway_fingerprint, Kind, Registration, RouteKey, Routes};
use super::target::Target;
use super::traffic::{Counters, CountingIo, Route, Traffic};
use super::tunnel::{self, End};
use super::upstream::{Connector, DialError, Dialer, MaybeTls};
use super::{Limits, OpenGuard};
use crate::config::{ConfigHandle, ConnectionConfig};
use crate::log::{Level, Logger};

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type PooledClient = Client<Connector, ClientBody>;

/// Everything the connection and tunnel tasks share.
pub(crate) struct Shared {
    pub(crate) config: ConfigHandle,
    pub(crate) logger: Arc<Logger>,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) routes: Arc<Routes>,
    /// Pooled connections to targets; replaced when a route change sends a
    /// host with pooled connections through the gateway.
    pub(crate) direct: ArcSwap<PooledClient>,
    /// Pooled connections to the gateway for one gateway route; replaced
    /// when credentials, `session_id` or `target_geo` change.
    pub(crate) gateway: ArcSwapOption<GatewayPool>,
    pub(crate) limits: Limits,
    /// Open client connections, tunnels included, against `limits`.
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) local_addr: SocketAddr,
    /// The gateway's failures: the last one, and their log lines.
    pub(crate) failures: Failures,
    /// Whether requests are served; while not, they wait (see
    /// [`super::ProxyServer::hold`]).
    pub(crate) open_gate: std::sync::atomic::AtomicBool,
    pub(crate) gate: tokio::sync::Notify,
}

/// The gateway route of one config: its `Proxy-Authorization` value and the
/// pool of gateway connections opened for it.
pub(crate) struct GatewayPool {
    fingerprint: u64,
    /// The config this pool was made from: the same snapshot skips hashing.
    /// (A `Weak` keeps the allocation, so its address is never reused.)
    made_from: Weak<ConnectionConfig>,
    auth: HeaderValue,
    client: PooledClient,
}

/// The routing decision for one request, taken from one config snapshot.
enum Decision {
    Direct,
    Gateway(Arc<GatewayPool>),
}

impl Decision {
    fn route(&self) -> Route {
        match self {
            Decision::Direct => Route::Direct,
            Decision::Gateway(_) => Route::Gateway,
        }
    }

    fn key(&self) -> RouteKey {
        match self {
            Decision::Direct => RouteKey::Direct,
            Decision::Gateway(pool) => RouteKey::Gateway(pool.fingerprint),
        }
    }
}

/// A connection dialled and registered on a settled route.
struct Dialled {
    decision: Decision,
    io: MaybeTls,
    registration: Registration,
    /// The hostname's counters on that route.
    counters: Arc<Counters>,
}

/// A pooled client whose connections go direct or to the gateway.
pub(crate) fn pooled_client(
    dialer: &Arc<Dialer>,
    via_gateway: bool,
    traffic: &Arc<Traffic>,
    routes: &Arc<Routes>,
    config: &ConfigHandle,
) -> PooledClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .http1_preserve_header_case(true)
        .build(Connector {
            dialer: dialer.clone(),
            via_gateway,
            traffic: traffic.clone(),
            routes: routes.clone(),
            config: config.clone(),
        })
}

/// The client's request body, remembering whether reading it failed (a
/// malformed chunked body is the client's fault: 400, not 502).
pub(crate) struct ClientBody {
    inner: Incoming,
    failed: Arc<AtomicBool>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A one-line `text/plain` answer: `"<Reason>: <detail>"`.
pub(crate) fn plain(status: StatusCode, detail: impl Display) -> Response<ProxyBody> {
    let detail = crate::text::redact_userinfo(&detail.to_string());
    let text = format!("{}: {detail}\n", status.canonical_reason().unwrap_or("Error"));
    let mut res = Response::new(full(text));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Answered by our own server side already (hyper sends the 100 Continue).
    "expect",
];

/// Drop the hop-by-hop headers, including every header `Connection` lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .chain(headers.get_all("proxy-connection").iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn basic_auth(username: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    // Base64 output is always a valid header value.
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// The innermost error message of a chain (hyper-util wraps the cause).
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn find_dial_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a DialError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<DialError>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

fn dial_failure(e: &DialError) -> Response<ProxyBody> {
    let status = if e.timed_out { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
    plain(status, e)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f32())
}

/// True for a request that asks to switch protocols (a WebSocket handshake).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Keep `Upgrade` (and `Connection: upgrade`) across the hop-by-hop strip.
fn strip_keeping_upgrade(headers: &mut HeaderMap) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// How many times a tunnel is dialled again when the route changed while it
/// was being dialled.
const ROUTE_ATTEMPTS: usize = 3;

impl Shared {
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        if !self.open_gate.load(Ordering::Acquire) {
            // Held until the config is known (at most the response limit):
            // no request is routed by an empty config.
            let opened = self.gate.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.open_gate.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(self.limits.response, opened).await;
            }
        }
        if req.method() == Method::CONNECT {
            Ok(self.tunnel(req).await)
        } else if is_upgrade(req.headers()) {
            Ok(self.upgrade(req).await)
        } else {
            Ok(self.forward(req).await)
        }
    }

    /// Read the current config once, lock-free, and decide.
    fn decide(&self, hostname: &str) -> Decision {
        let snapshot = self.config.load();
        match snapshot.as_ref() {
            Some(cfg) if cfg.rules.should_proxy(hostname) => Decision::Gateway(self.gateway_pool(cfg)),
            _ => Decision::Direct,
        }
    }

    /// The gateway pool for `cfg`'s gateway route, made when there is none.
    fn gateway_pool(&self, cfg: &Arc<ConnectionConfig>) -> Arc<GatewayPool> {
        let current = self.gateway.load_full();
        if let Some(pool) = &current {
            if std::ptr::eq(pool.made_from.as_ptr(), Arc::as_ptr(cfg)) {
                return pool.clone();
            }
        }
        let fingerprint = gateway_fingerprint(cfg);
        if let Some(pool) = current.filter(|p| p.fingerprint == fingerprint) {
            return pool;
        }
        let fresh = Arc::new(GatewayPool {
            fingerprint,
            made_from: Arc::downgrade(cfg),
            auth: basic_auth(&cfg.proxy_username, &cfg.proxy_password),
            client: pooled_client(&self.dialer, true, &self.traffic, &self.routes, &self.config),
        });
        let previous = self.gateway.rcu(|cur| match cur {
            Some(p) if p.fingerprint == fingerprint => Some(p.clone()),
            _ => Some(fresh.clone()),
        });
        match previous {
            Some(p) if p.fingerprint == fingerprint => p,
            _ => fresh,
        }
    }

    /// After a config change: close the tunnels whose route it changes and
    /// drop the pools of connections on stale routes, before returning.
    pub(crate) async fn reroute(&self) {
        let cfg = self.config.load_full();
        let fingerprint = cfg.as_deref().map(gateway_fingerprint);
        let stale_gateway = self.gateway.load().as_ref().is_some_and(|p| Some(p.fingerprint) != fingerprint);
        if stale_gateway {
            // Its idle connections close as the pool drops; requests in
            // flight finish on theirs.
            self.gateway.store(None);
        }
        let rerouted = self.routes.reroute(cfg.as_deref()).await;
        if rerouted.stale_direct_pool {
            self.direct.store(Arc::new(pooled_client(&self.dialer, false, &self.traffic, &self.routes, &self.config)));
        }
        if self.logger.enabled(Level::Debug) && (rerouted.tunnels_closed > 0 || stale_gateway) {
            self.logger.debug(format!(
                "route change: closed {} tunnel(s){}{}",
                rerouted.tunnels_closed,
                if stale_gateway { ", the gateway pool" } else { "" },
                if rerouted.stale_direct_pool { ", the direct pool" } else { "" },
            ));
        }
    }

    fn log(&self, what: &str, hostname: &str, route: Route, status: StatusCode, note: Option<&str>) {
        if !self.logger.enabled(Level::Debug) {
            return;
        }
        match note {
            Some(note) => self.logger.debug(format!("{what} {hostname} via {route}: {} ({note})", status.as_u16())),
            None => self.logger.debug(format!("{what} {hostname} via {route}: {}", status.as_u16())),
        }
    }

    /// A failure on `route` to `hostname`, answered with `detail`; the
    /// gateway's are recorded (see [`Failures`]).
    fn failed(&self, hostname: &str, route: Route, status: StatusCode, detail: String) -> Response<ProxyBody> {
        self.failures.record(&self.logger, hostname, route, &detail);
        plain(status, detail)
    }

    fn reject(&self, what: &str, status: StatusCode, detail: impl Display) -> Response<ProxyBody> {
        let res = plain(status, &detail);
        if self.logger.enabled(Level::Debug) {
            self.logger.debug(format!("{what}: {} ({detail})", status.as_u16()));
        }
        res
    }

    /// Where a non-CONNECT request goes: the absolute URI, else the Host header.
    fn request_target(req: &Request<Incoming>) -> Result<Target, &'static str> {
        let uri = req.uri();
        if let Some(scheme) = uri.scheme() {
            if *scheme != Scheme::HTTP && !scheme.as_str().eq_ignore_ascii_case("ws") {
                return Err("only http:// URLs can be proxied; use CONNECT for https");
            }
            let authority = uri.authority().ok_or("missing host")?;
            if authority.as_str().contains('@') {
                return Err("a target with userinfo (user:password@) is not proxied");
            }
            return Target::new(authority.host(), authority.port_u16(), 80);
        }
        if uri.authority().is_some() {
            return Err("malformed request target");
        }
        let host = req.headers().get(header::HOST).ok_or("missing host")?;
        let authority: Authority = host.to_str().ok().and_then(|h| h.parse().ok()).ok_or("malformed Host header")?;
        if authority.as_str().contains('@') {
            return Err("a target with userinfo (user:password@) is not proxied");
        }
        Target::new(authority.host(), authority.port_u16(), 80)
    }

    /// The target of a request, or the 400 that refuses it (malformed, or
    /// the proxy itself).
    async fn checked_target(&self, req: &Request<Incoming>) -> Result<(Target, Uri), Response<ProxyBody>> {
        let method = req.method().as_str();
        let target = Self::request_target(req).map_err(|why| self.reject(method, StatusCode::BAD_REQUEST, why))?;
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("http://{}{path}", target.authority(80))
            .parse()
            .map_err(|_| self.reject(method, StatusCode::BAD_REQUEST, "malformed request target"))?;
        if target.is_proxy(self.local_addr).await {
            return Err(self.reject(method, StatusCode::BAD_REQUEST, "the request targets the proxy itself"));
        }
        if target.is_control_endpoint().await {
            return Err(self.reject(method, StatusCode::FORBIDDEN, CONTROL_ENDPOINT));
        }
        Ok((target, uri))
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let (target, uri) = match self.checked_target(&req).await {
            Ok(t) => t,
            Err(res) => return res,
        };
        let absolute = req.uri().scheme().is_some();
        let authority = target.authority(80);

        let decision = self.decide(&target.hostname);
        let route = decision.route();
        let counters = self.traffic.counters(&target.hostname, route);
        counters.requests.fetch_add(1, Ordering::Relaxed);

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if absolute || !parts.headers.contains_key(header::HOST) {
            // RFC 9112 §3.2.2: the absolute form's authority replaces Host.
            if let Ok(host) = HeaderValue::from_str(&authority) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let direct;
        let (client, upstream_label) = match &decision {
            Decision::Direct => {
                direct = self.direct.load_full();
                (&*direct, format!("{}:{}", target.host, target.port))
            }
            Decision::Gateway(pool) => {
                parts.headers.insert(header::PROXY_AUTHORIZATION, pool.auth.clone());
                (&pool.client, self.dialer.gateway_label())
            }
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let failed = Arc::new(AtomicBool::new(false));
        let upstream_req = Request::from_parts(parts, ClientBody { inner: body, failed: failed.clone() });

        let res = match tokio::time::timeout(self.limits.response, client.request(upstream_req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                let res = if failed.load(Ordering::Relaxed) {
                    plain(StatusCode::BAD_REQUEST, format!("malformed request body ({})", root_cause(&e)))
                } else {
                    let (res, detail) = match find_dial_error(&e) {
                        Some(dial) => (dial_failure(dial), dial.to_string()),
                        None => {
                            let detail = format!("request to {upstream_label} failed ({})", root_cause(&e));
                            (plain(StatusCode::BAD_GATEWAY, &detail), detail)
                        }
                    };
                    self.failures.record(&self.logger, &target.hostname, route, &detail);
                    res
                };
                self.log(method.as_str(), &target.hostname, route, res.status(), Some(&root_cause(&e)));
                return res;
            }
            Err(_) => {
                let detail = format!("no response from {upstream_label} within {}", secs(self.limits.response));
                self.failures.record(&self.logger, &target.hostname, route, &detail);
                let res = plain(StatusCode::GATEWAY_TIMEOUT, detail);
                self.log(method.as_str(), &target.hostname, route, res.status(), Some("timed out"));
                return res;
            }
        };

        if route == Route::Gateway && res.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            // Our credentials were refused: the client can do nothing about
            // it, so do not ask it to authenticate.
            let detail = "gateway rejected the proxy credentials (HTTP 407)";
            self.failures.record(&self.logger, &target.hostname, route, detail);
            let res = plain(StatusCode::BAD_GATEWAY, detail);
            self.log(method.as_str(), &target.hostname, route, res.status(), Some("gateway answered 407"));
            return res;
        }

        self.log(method.as_str(), &target.hostname, route, res.status(), None);
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
    }

    /// An `Upgrade` request in absolute form (a WebSocket over `ws://`):
    /// forwarded on a connection of its own and, once the target switches
    /// protocols, relayed and counted like a tunnel.
    async fn upgrade(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let (target, uri) = match self.checked_target(&req).await {
            Ok(t) => t,
            Err(res) => return res,
        };
        let client_side = hyper::upgrade::on(&mut req);
        let Dialled { decision, io, registration, counters: host_counters } =
            match self.dial_registered(&target, method.as_str(), |c| &c.requests).await {
                Ok(d) => d,
                Err(res) => return res,
            };
        let route = decision.route();
        host_counters.tunnels.fetch_add(1, Ordering::Relaxed);
        let counters = Counters::child(&host_counters);
        let label = match &decision {
            Decision::Direct => format!("{}:{}", target.host, target.port),
            Decision::Gateway(_) => self.dialer.gateway_label(),
        };
        let io = CountingIo::upstream(io, counters.clone());
        let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await
        {
            Ok(pair) => pair,
            Err(e) => {
                return self.failed(
                    &target.hostname,
                    route,
                    StatusCode::BAD_GATEWAY,
                    format!("{label} failed ({})", root_cause(&e)),
                )
            }
        };
        self.tracker.spawn(async move {
            let _ = conn.with_upgrades().await;
        });

        let (mut parts, _body) = req.into_parts();
        strip_keeping_upgrade(&mut parts.headers);
        if let Ok(host) = HeaderValue::from_str(&target.authority(80)) {
            parts.headers.insert(header::HOST, host);
        }
        match &decision {
            Decision::Direct => {
                parts.uri = Uri::from(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")))
            }
            Decision::Gateway(pool) => {
                parts.headers.insert(header::PROXY_AUTHORIZATION, pool.auth.clone());
                parts.uri = uri;
            }
        }
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, Empty::<Bytes>::new());
        let mut res = match tokio::time::timeout(self.limits.response, sender.send_request(upstream_req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                return self.failed(
                    &target.hostname,
                    route,
                    StatusCode::BAD_GATEWAY,
                    format!("request to {label} failed ({})", root_cause(&e)),
                )
            }
            Err(_) => {
                return self.failed(
                    &target.hostname,
                    route,
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no response from {label} within {}", secs(self.limits.response)),
                )
            }
        };
        self.log(method.as_str(), &target.hostname, route, res.status(), Some("upgrade"));
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        }
        let upstream_side = hyper::upgrade::on(&mut res);
        let relay_counters = counters.clone();
        let relay = async move {
            let (Ok(client), Ok(upstream)) = tokio::join!(client_side, upstream_side) else { return };
            // The upstream side counts its own bytes (it is a CountingIo).
            let _ = tunnel::relay_uncounted(End::client(client), TokioIo::new(upstream), relay_counters).await;
        };
        self.spawn_tunnel(relay, registration, counters);
        let (mut parts, _) = res.into_parts();
        strip_keeping_upgrade(&mut parts.headers);
        Response::from_parts(parts, empty())
    }

    /// Dial `target` on the route the current config gives, and register the
    /// connection under that route. If the route changed meanwhile (a
    /// reroute ran between the decision and the registration), decide and
    /// dial again. Once the route is settled, `counter` of its counters is
    /// bumped (the attempt counts, dialled or not); a failed dial is logged
    /// as `what` and answered.
    async fn dial_registered(
        &self,
        target: &Target,
        what: &str,
        counter: impl Fn(&Counters) -> &AtomicU64,
    ) -> Result<Dialled, Response<ProxyBody>> {
        for _ in 0..ROUTE_ATTEMPTS {
            let decision = self.decide(&target.hostname);
            let dialled = match &decision {
                Decision::Direct => self.dialer.target(&target.host, target.port).await.map(MaybeTls::Plain),
                Decision::Gateway(_) => self.dialer.gateway().await,
            };
            let Some(registration) = self.routes.register(&self.config, &target.hostname, decision.key(), Kind::Tunnel)
            else {
                continue;
            };
            let route = decision.route();
            let counters = self.traffic.counters(&target.hostname, route);
            counter(&counters).fetch_add(1, Ordering::Relaxed);
            return match dialled {
                Ok(io) => Ok(Dialled { decision, io, registration, counters }),
                Err(e) => {
                    let res = dial_failure(&e);
                    self.log(what, &target.hostname, route, res.status(), Some(&e.reason));
                    self.failures.record(&self.logger, &target.hostname, route, &e.to_string());
                    Err(res)
                }
            };
        }
        Err(plain(StatusCode::BAD_GATEWAY, "the route changed while connecting; try again"))
    }

    async fn tunnel(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let target = match req.uri().authority() {
            Some(a) if a.as_str().contains('@') => Err("a target with userinfo (user:password@) is not proxied"),
            Some(a)
                if req.uri().scheme().is_none() && req.uri().path_and_query().is_none_or(|p| p.as_str().is_empty()) =>
            {
                match a.port_u16() {
                    None => Err("CONNECT target must be host:port"),
                    Some(port) => Target::new(a.host(), Some(port), 443),
                }
            }
            _ => Err("CONNECT target must be host:port"),
        };
        let target = match target {
            Ok(t) => t,
            Err(why) => return self.reject("CONNECT", StatusCode::BAD_REQUEST, why),
        };
        if target.is_proxy(self.local_addr).await {
            return self.reject("CONNECT", StatusCode::BAD_REQUEST, "the tunnel targets the proxy itself");
        }
        if target.is_control_endpoint().await {
            return self.reject("CONNECT", StatusCode::FORBIDDEN, CONTROL_ENDPOINT);
        }

        let Dialled { decision, io, registration, counters: host_counters } =
            match self.dial_registered(&target, "CONNECT", |c| &c.tunnels).await {
                Ok(d) => d,
                Err(res) => return res,
            };
        let route = decision.route();
        let upstream = match &decision {
            Decision::Direct => match io {
                MaybeTls::Plain(tcp) => End::tcp(tcp),
                other => End::other(other),
            },
            Decision::Gateway(pool) => {
                let authority = format!("{}:{}", target.host, target.port);
                match self.gateway_tunnel(io, &target.hostname, &authority, pool.auth.clone()).await {
                    Ok(end) => end,
                    Err(res) => {
                        self.log("CONNECT", &target.hostname, route, res.status(), Some("gateway tunnel failed"));
                        return res;
                    }
                }
            }
        };

        self.log("CONNECT", &target.hostname, route, StatusCode::OK, None);
        let counters = Counters::child(&host_counters);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let relay_counters = counters.clone();
        let relay = async move {
            let Ok(client) = on_upgrade.await else { return };
            let _ = tunnel::relay(End::client(client), upstream, relay_counters).await;
        };
        self.spawn_tunnel(relay, registration, counters);
        Response::new(empty())
    }

    /// Ask the gateway, over `io`, for its own tunnel to `authority`.
    async fn gateway_tunnel(
        &self,
        io: MaybeTls,
        hostname: &str,
        authority: &str,
        auth: HeaderValue,
    ) -> Result<End, Response<ProxyBody>> {
        let label = self.dialer.gateway_label();
        let failed = |status, detail: String| self.failed(hostname, Route::Gateway, status, detail);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| failed(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))))?;
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = Method::CONNECT;
        *req.uri_mut() =
            authority.parse().map_err(|_| plain(StatusCode::BAD_REQUEST, "CONNECT target must be host:port"))?;
        let host = HeaderValue::from_str(authority)
            .map_err(|_| plain(StatusCode::BAD_REQUEST, "CONNECT target must be host:port"))?;
        req.headers_mut().insert(header::HOST, host);
        req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth);

        // The connection future resolves on its own once it hands the socket
        // over to the upgrade, possibly before the response is picked up.
        let conn = conn.with_upgrades();
        tokio::pin!(conn);
        let send = tokio::time::timeout(self.limits.response, sender.send_request(req));
        tokio::pin!(send);
        let mut conn_done = false;
        let answer = loop {
            tokio::select! {
                answer = send.as_mut() => break answer,
                closed = conn.as_mut(), if !conn_done => {
                    if let Err(e) = closed {
                        return Err(failed(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))));
                    }
                    conn_done = true;
                }
            }
        };
        let res = match answer {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(failed(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e)))),
            Err(_) => {
                return Err(failed(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer from {label} within {}", secs(self.limits.response)),
                ))
            }
        };
        if !res.status().is_success() {
            return Err(failed(
                StatusCode::BAD_GATEWAY,
                format!("gateway refused tunnel (HTTP {})", res.status().as_u16()),
            ));
        }
        let upgraded =
            if conn_done { hyper::upgrade::on(res).await } else { tokio::join!(conn, hyper::upgrade::on(res)).1 };
        upgraded
            .map(End::gateway)
            .map_err(|e| failed(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))))
    }

    /// Run a tunnel's relay until it ends, the proxy stops, a route change
    /// cancels it, no byte moved either way for the idle limit, or one side
    /// has closed and the other has been quiet for the half-close limit. The
    /// registration goes only after the relay (and its sockets) are dropped.
    fn spawn_tunnel(
        &self,
        relay: impl std::future::Future<Output = ()> + Send + 'static,
        registration: Registration,
        counters: Arc<Counters>,
    ) {
        let open = OpenGuard::new(&self.open);
        let shutdown = self.shutdown.clone();
        let (idle, half_close) = (self.limits.tunnel_idle, self.limits.half_close);
        let token = registration.token().clone();
        self.tracker.spawn(async move {
            let _open = open;
            let _registration = registration;
            tokio::select! {
                _ = relay => {}
                _ = shutdown.cancelled() => {}
                _ = token.cancelled() => {}
                _ = idle_for(idle, half_close, &counters) => {}
            }
        });
    }
}

/// Why a request to a browser session's DevTools endpoint is a 403.
const CONTROL_ENDPOINT: &str = "the target is a browser session's control endpoint";

/// Resolves once `counters` have not moved for `limit`, or for `half_close`
/// once one side has ended (checked four times per the shorter limit, so it
/// ends within a quarter of it past the limit).
async fn idle_for(limit: Duration, half_close: Duration, counters: &Counters) {
    let tick = limit.min(half_close) / 4;
    let mut last = counters.bytes_moved();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = counters.bytes_moved();
        if now == last {
            quiet += tick;
            if quiet >= limit || (quiet >= half_close && counters.half_closed()) {
                return;
            }
        } else {
            last = now;
            quiet = Duration::ZERO;
        }
    }
}
