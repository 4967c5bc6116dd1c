//! The gateway: an HTTP/1.1 forward proxy (absolute-form and `CONNECT`) that
//! authenticates with a connection's proxy credentials and opens upstream
//! connections from the connection's exit address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::{Exit, HostStats};
use crate::util::{empty, text_response, Body, BoxError};
use crate::{exit_address, server, GatewayRun, Inner};

/// How long the gateway waits for a target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that concern one hop only and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Ctx {
    inner: Arc<Inner>,
    /// Cancelled when the gateway goes down or the emulator stops.
    token: CancellationToken,
    /// Upstream drivers and tunnels of this gateway incarnation.
    tracker: TaskTracker,
}

/// Starts serving the gateway on `listener`.
pub(crate) fn spawn(inner: Arc<Inner>, listener: TcpListener) -> GatewayRun {
    let token = inner.root.child_token();
    let tracker = TaskTracker::new();
    let ctx = Arc::new(Ctx { inner, token: token.clone(), tracker: tracker.clone() });
    server::serve(listener, token.clone(), tracker.clone(), move |req, _peer| handle(ctx.clone(), req));
    GatewayRun { token, tracker }
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let Some(connection_id) = authenticate(&ctx.inner, req.headers()) else {
        let mut resp = text_response(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "Proxy authentication required");
        resp.headers_mut().insert(PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"aluvia\""));
        return resp;
    };
    if req.method() == Method::CONNECT {
        tunnel(ctx, connection_id, req).await
    } else {
        forward(ctx, connection_id, req).await
    }
}

/// The id of the live connection whose credentials the request carries.
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(PROXY_AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    inner.state().connections.values().find(|c| c.username == user && c.password == pass).map(|c| c.id)
}

/// The hostname of an authority, lower-cased, without port or IPv6 brackets.
fn hostname(authority: &Authority) -> String {
    let host = authority.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_ascii_lowercase()
}

fn bad_gateway(reason: impl std::fmt::Display) -> Response<Body> {
    text_response(StatusCode::BAD_GATEWAY, format!("Bad Gateway: {reason}"))
}

fn bad_request(reason: &str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, format!("Bad Request: {reason}"))
}

/// Opens the upstream TCP connection for `connection_id`, from its current exit
/// address when the target is an IPv4 loopback address.
async fn connect_upstream(inner: &Inner, connection_id: u64, host: &str, port: u16) -> Result<TcpStream, String> {
    let (exit, route) = {
        let st = inner.state();
        let conn = st.connections.get(&connection_id);
        let (session_id, target_geo) =
            (conn.and_then(|c| c.session_id.clone()), conn.and_then(|c| c.target_geo.clone()));
        (exit_address(session_id.as_deref(), target_geo.as_deref()), Exit { connection_id, session_id, target_geo })
    };
    let attempt = async {
        let mut addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        // IPv4 first, so `localhost` targets see the exit address.
        addrs.sort_by_key(|a| !a.is_ipv4());
        let mut last_error = None;
        for addr in addrs {
            match connect_from(exit, addr).await {
                Ok(stream) => {
                    // The protected site tells its gateway visitors apart by this.
                    if let Ok(local) = stream.local_addr() {
                        inner.state().exits.record(local, route.clone());
                    }
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => format!("cannot connect to {host}:{port}: {e}"),
            None => format!("cannot resolve {host}: no addresses"),
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out connecting to {host}:{port}")),
    }
}

async fn connect_from(exit: Ipv4Addr, addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let socket = TcpSocket::new_v4()?;
            match socket.bind(SocketAddr::from((exit, 0))) {
                Ok(()) => socket.connect(addr).await?,
                // Systems that only configure 127.0.0.1 (macOS): go without.
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => TcpStream::connect(addr).await?,
                Err(e) => return Err(e),
            }
        }
        _ => TcpStream::connect(addr).await?,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// True for a request that asks to switch protocols (a WebSocket handshake).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(hyper::header::UPGRADE)
        && headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Forwards an absolute-form request in origin form; an `Upgrade` request
/// (a WebSocket) becomes a relayed connection once the target switches.
async fn forward(ctx: Arc<Ctx>, connection_id: u64, mut req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    let Some(authority) = uri.authority().cloned() else {
        return bad_request("expected an absolute-form request (GET http://host/path) or CONNECT");
    };
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        _ => return bad_request("only http:// targets can be sent in absolute form; use CONNECT"),
    }
    let host = hostname(&authority);
    let port = authority.port_u16().unwrap_or(80);

    let stream = match connect_upstream(&ctx.inner, connection_id, &host, port).await {
        Ok(stream) => stream,
        Err(reason) => return bad_gateway(reason),
    };
    let stats = ctx.inner.host_stats(connection_id, &host);
    let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let stream = Counting { stream, stats: stats.clone() };
    let (mut sender, conn) =
        match hyper::client::conn::http1::Builder::new().handshake::<_, Body>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway(format!("upstream handshake with {host}:{port} failed: {e}")),
        };
    let token = ctx.token.clone();
    ctx.tracker.spawn(async move {
        tokio::select! {
            _ = conn.with_upgrades() => {}
            _ = token.cancelled() => {}
        }
    });

    let (mut parts, body) = req.into_parts();
    let upgrade_header = parts.headers.get(hyper::header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (Some(_), Some(value)) = (&upgrade, upgrade_header) {
        parts.headers.insert(hyper::header::UPGRADE, value);
        parts.headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !parts.headers.contains_key(HOST) {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(HOST, value);
        }
    }
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;

    stats.requests.fetch_add(1, Ordering::Relaxed);
    let body: Body = body.map_err(BoxError::from).boxed();
    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => return bad_gateway(format!("upstream {host}:{port} failed: {e}")),
    };
    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, resp.status()) {
        let upstream_side = hyper::upgrade::on(&mut resp);
        stats.tunnels.fetch_add(1, Ordering::Relaxed);
        let token = ctx.token.clone();
        ctx.tracker.spawn(async move {
            let relay = async move {
                let (Ok(client), Ok(upstream)) = tokio::join!(client_side, upstream_side) else { return };
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            };
            tokio::select! {
                _ = relay => {}
                _ = token.cancelled() => {}
            }
        });
        let (mut parts, _) = resp.into_parts();
        let upgrade_header = parts.headers.get(hyper::header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(value) = upgrade_header {
            parts.headers.insert(hyper::header::UPGRADE, value);
            parts.headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

/// Answers `CONNECT host:port` with an empty 200 and splices the upgraded
/// connection to the target.
async fn tunnel(ctx: Arc<Ctx>, connection_id: u64, mut req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return bad_request("CONNECT needs a host:port target");
    };
    let host = hostname(&authority);
    let port = authority.port_u16().unwrap_or(443);
    let upstream = match connect_upstream(&ctx.inner, connection_id, &host, port).await {
        Ok(stream) => stream,
        Err(reason) => return bad_gateway(reason),
    };
    let stats = ctx.inner.host_stats(connection_id, &host);
    stats.tunnels.fetch_add(1, Ordering::Relaxed);

    let on_upgrade = hyper::upgrade::on(&mut req);
    let token = ctx.token.clone();
    ctx.tracker.spawn(async move {
        let splice = async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(upgraded);
            let mut upstream = Counting { stream: upstream, stats };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        };
        tokio::select! {
            _ = splice => {}
            _ = token.cancelled() => {}
        }
    });
    Response::new(empty())
}

/// The gateway's upstream connection (a forwarded request's or a tunnel's),
/// counting the bytes written to the target (up) and read from it (down):
/// what the gateway carried, on the wire.
struct Counting {
    stream: TcpStream,
    stats: Arc<HostStats>,
}

impl AsyncRead for Counting {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.stats.add_down((buf.filled().len() - before) as u64);
        }
        result
    }
}

impl AsyncWrite for Counting {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            this.stats.add_up(n as u64);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
