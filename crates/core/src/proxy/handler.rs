//! Per-request work: parse the target, route it, forward it (pooled) or
//! open a tunnel, and turn every failure into a one-line answer.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, Scheme};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::traffic::{Counters, CountingBody, Direction, Route, Traffic};
use super::tunnel::{self, End};
use super::upstream::{authority_host, bare_host, Connector, DialError, Dialer};
use super::{stopped, Timeouts, Tracker};
use crate::config::ConfigHandle;
use crate::log::{Level, Logger};
use crate::rules::normalize_host;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type ReqBody = CountingBody<Incoming>;
pub(crate) type PooledClient = Client<Connector, ReqBody>;

/// Everything the connection and tunnel tasks share.
pub(crate) struct Shared {
    pub(crate) config: ConfigHandle,
    pub(crate) logger: Arc<Logger>,
    pub(crate) traffic: Traffic,
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) direct: PooledClient,
    pub(crate) via_gateway: PooledClient,
    pub(crate) timeouts: Timeouts,
    pub(crate) tracker: Tracker,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) local_addr: SocketAddr,
}

/// The routing decision for one request, taken from one config snapshot.
enum Decision {
    Direct,
    /// Through the gateway, with the `Proxy-Authorization` value to send.
    Gateway(HeaderValue),
}

impl Decision {
    fn route(&self) -> Route {
        match self {
            Decision::Direct => Route::Direct,
            Decision::Gateway(_) => Route::Gateway,
        }
    }
}

/// Where a request goes.
struct Target {
    /// As it goes into an authority (IPv6 in brackets).
    host: String,
    port: u16,
    /// Normalized, for the rules and the counters.
    hostname: String,
}

impl Target {
    fn new(host: &str, port: Option<u16>, default_port: u16) -> Result<Target, &'static str> {
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
    fn authority(&self, default_port: u16) -> String {
        if self.port == default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A one-line `text/plain` answer: `"<Reason>: <detail>"`.
pub(crate) fn plain(status: StatusCode, detail: impl Display) -> Response<ProxyBody> {
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

impl Shared {
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        if req.method() == Method::CONNECT {
            Ok(self.tunnel(req).await)
        } else {
            Ok(self.forward(req).await)
        }
    }

    /// Read the current config once, lock-free, and decide.
    fn decide(&self, hostname: &str) -> Decision {
        let snapshot = self.config.load();
        match snapshot.as_deref() {
            Some(cfg) if cfg.rules.should_proxy(hostname) => {
                Decision::Gateway(basic_auth(&cfg.proxy_username, &cfg.proxy_password))
            }
            _ => Decision::Direct,
        }
    }

    /// True when a direct request would come straight back to this proxy.
    fn is_self(&self, target: &Target) -> bool {
        if target.port != self.local_addr.port() {
            return false;
        }
        target.hostname == "localhost" || target.hostname.parse::<IpAddr>().is_ok_and(|ip| ip == self.local_addr.ip())
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
            if *scheme != Scheme::HTTP {
                return Err("only http:// URLs can be proxied; use CONNECT for https");
            }
            let authority = uri.authority().ok_or("missing host")?;
            return Target::new(authority.host(), authority.port_u16(), 80);
        }
        if uri.authority().is_some() {
            return Err("malformed request target");
        }
        let host = req.headers().get(header::HOST).ok_or("missing host")?;
        let authority: Authority = host.to_str().ok().and_then(|h| h.parse().ok()).ok_or("malformed Host header")?;
        Target::new(authority.host(), authority.port_u16(), 80)
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let target = match Self::request_target(&req) {
            Ok(t) => t,
            Err(why) => return self.reject(method.as_str(), StatusCode::BAD_REQUEST, why),
        };
        let absolute = req.uri().scheme().is_some();
        let authority = target.authority(80);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = match format!("http://{authority}{path}").parse() {
            Ok(uri) => uri,
            Err(_) => return self.reject(method.as_str(), StatusCode::BAD_REQUEST, "malformed request target"),
        };

        let decision = self.decide(&target.hostname);
        let route = decision.route();
        if route == Route::Direct && self.is_self(&target) {
            return self.reject(method.as_str(), StatusCode::BAD_REQUEST, "the request targets the proxy itself");
        }
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
        let (client, upstream_label) = match &decision {
            Decision::Direct => (&self.direct, format!("{}:{}", target.host, target.port)),
            Decision::Gateway(auth) => {
                parts.headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
                (&self.via_gateway, self.dialer.gateway_label())
            }
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, CountingBody::new(body, counters.clone(), Direction::Sent));

        let res = match tokio::time::timeout(self.timeouts.response, client.request(upstream_req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                let res = match find_dial_error(&e) {
                    Some(dial) => dial_failure(dial),
                    None => plain(
                        StatusCode::BAD_GATEWAY,
                        format!("request to {upstream_label} failed ({})", root_cause(&e)),
                    ),
                };
                self.log(method.as_str(), &target.hostname, route, res.status(), Some(&root_cause(&e)));
                return res;
            }
            Err(_) => {
                let res = plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no response from {upstream_label} within {}", secs(self.timeouts.response)),
                );
                self.log(method.as_str(), &target.hostname, route, res.status(), Some("timed out"));
                return res;
            }
        };

        if route == Route::Gateway && res.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            // Our credentials were refused: the client can do nothing about
            // it, so do not ask it to authenticate.
            let res = plain(StatusCode::BAD_GATEWAY, "gateway rejected the proxy credentials (HTTP 407)");
            self.log(method.as_str(), &target.hostname, route, res.status(), Some("gateway answered 407"));
            return res;
        }

        self.log(method.as_str(), &target.hostname, route, res.status(), None);
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = CountingBody::new(body, counters, Direction::Received).map_err(BoxError::from).boxed_unsync();
        Response::from_parts(parts, body)
    }

    async fn tunnel(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let target = match req.uri().authority() {
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

        let decision = self.decide(&target.hostname);
        let route = decision.route();
        if route == Route::Direct && self.is_self(&target) {
            return self.reject("CONNECT", StatusCode::BAD_REQUEST, "the tunnel targets the proxy itself");
        }
        let counters = self.traffic.counters(&target.hostname, route);
        counters.tunnels.fetch_add(1, Ordering::Relaxed);

        let upstream = match decision {
            Decision::Direct => match self.dialer.target(&target.host, target.port).await {
                Ok(tcp) => End::tcp(tcp),
                Err(e) => {
                    let res = dial_failure(&e);
                    self.log("CONNECT", &target.hostname, route, res.status(), Some(&e.reason));
                    return res;
                }
            },
            Decision::Gateway(auth) => {
                match self.gateway_tunnel(&format!("{}:{}", target.host, target.port), auth).await {
                    Ok(end) => end,
                    Err(res) => {
                        self.log("CONNECT", &target.hostname, route, res.status(), Some("gateway tunnel failed"));
                        return res;
                    }
                }
            }
        };

        self.log("CONNECT", &target.hostname, route, StatusCode::OK, None);
        self.spawn_splice(hyper::upgrade::on(&mut req), upstream, counters);
        Response::new(empty())
    }

    /// Ask the gateway for its own tunnel to `authority`.
    async fn gateway_tunnel(&self, authority: &str, auth: HeaderValue) -> Result<End, Response<ProxyBody>> {
        let label = self.dialer.gateway_label();
        let io = self.dialer.gateway().await.map_err(|e| dial_failure(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))))?;
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
        let send = tokio::time::timeout(self.timeouts.response, sender.send_request(req));
        tokio::pin!(send);
        let mut conn_done = false;
        let answer = loop {
            tokio::select! {
                answer = send.as_mut() => break answer,
                closed = conn.as_mut(), if !conn_done => {
                    if let Err(e) = closed {
                        return Err(plain(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))));
                    }
                    conn_done = true;
                }
            }
        };
        let res = match answer {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(plain(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e)))),
            Err(_) => {
                return Err(plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer from {label} within {}", secs(self.timeouts.response)),
                ))
            }
        };
        if !res.status().is_success() {
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                format!("gateway refused tunnel (HTTP {})", res.status().as_u16()),
            ));
        }
        let upgraded =
            if conn_done { hyper::upgrade::on(res).await } else { tokio::join!(conn, hyper::upgrade::on(res)).1 };
        upgraded
            .map(End::gateway)
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, format!("{label} failed ({})", root_cause(&e))))
    }

    /// Once the client's connection is handed over, splice it with upstream
    /// until either side closes or the proxy stops.
    fn spawn_splice(&self, on_upgrade: OnUpgrade, upstream: End, counters: Arc<Counters>) {
        let guard = self.tracker.guard();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let splice = async move {
                let Ok(client) = on_upgrade.await else { return };
                let _ = tunnel::relay(End::client(client), upstream, counters).await;
            };
            tokio::select! {
                _ = splice => {}
                _ = stopped(&mut shutdown) => {}
            }
        });
    }
}
